#!/usr/bin/env python3
"""Writes a minimal pure-Python wheel, for test upstreams.

Usage: make_wheel.py OUT_DIR NAME VERSION [REQUIREMENT...]

The wheel holds one module (`NAME` with `-` as `_`) whose `VERSION`
attribute is the version, so a test can check which version a client
installed. No build backend is needed: a wheel is a zip with a
`.dist-info` directory (PEP 427), written here with its RECORD hashes.
"""
import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"{path},sha256={digest.decode()},{len(data)}"


def make_wheel(out_dir: Path, name: str, version: str, requires: list[str]) -> Path:
    # PEP 427 escaping of the distribution name; also the module name.
    module = re.sub(r"[-_.]+", "_", name).lower()
    dist_info = f"{module}-{version}.dist-info"
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        "Requires-Python: >=3.7",
    ] + [f"Requires-Dist: {r}" for r in requires]
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: artifactd-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [record_line(path, data) for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = out_dir / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            # A fixed timestamp: the same inputs give the same bytes.
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            wheel.writestr(info, data)
    return out


if __name__ == "__main__":
    out_dir, name, version, *requires = sys.argv[1:]
    print(make_wheel(Path(out_dir), name, version, requires))
