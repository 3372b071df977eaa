"""Process helpers shared by the benchmark scripts."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen) -> None:
    """Terminates `proc`, killing it if it has not exited within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
