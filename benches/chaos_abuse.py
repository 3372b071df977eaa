"""The chaos harness's hostile parties: an upstream that answers garbage,
and clients that abuse the connection (slow heads, idle floods, oversized
heads, smuggling shapes, HTTP/2 rapid reset)."""

from __future__ import annotations

import gzip
import resource
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from pathlib import Path

# path the upstream sees -> what it does (see HostileUpstream._answer)
BROKEN_CASES = {
    "/reset.bin": "reset at a random offset",
    "/silent.bin": "silence before the headers",
    "/huge-header.bin": "a 10 MB header",
    "/endless.bin": "an endless chunked body past max_object_size",
    "/wrong-length.bin": "a 200 whose body is shorter than its Content-Length",
    "/loop.bin": "a redirect loop",
    "/bomb": "a gzip bomb in an npm document",
    "/broken": "an npm document that is not JSON",
    "/pypi/broken/json": "a PyPI JSON document cut short",
    "/index.yaml": "a Helm index that is not YAML",
}


class HostileUpstream:
    """Answers each path of BROKEN_CASES with its garbage; counts requests."""

    def __init__(self, silence: float):
        self.silence = silence
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.bomb = gzip.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(120)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ", 2)[1].decode()
            with self.lock:
                self.hits[path] += 1
            try:
                self._answer(conn, path)
            except OSError:
                pass

    def _answer(self, conn: socket.socket, path: str) -> None:
        def plain(body: bytes, content_type: str = "application/octet-stream", extra: str = "") -> bytes:
            return (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode() + body
        if path == "/reset.bin":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n")
            conn.sendall(b"r" * (hash(time.monotonic()) % 3_000_000))
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif path == "/silent.bin":
            time.sleep(self.silence)
        elif path == "/huge-header.bin":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (10 << 20) + b"\r\nContent-Length: 2\r\n\r\nok")
        elif path == "/endless.bin":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"10000\r\n" + b"e" * 0x10000 + b"\r\n"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                conn.sendall(chunk)
        elif path == "/wrong-length.bin":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"w" * 400_000)
        elif path == "/loop.bin":
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /loop.bin\r\nContent-Length: 0\r\n\r\n")
        elif path == "/bomb":
            conn.sendall(plain(self.bomb, "application/json", "Content-Encoding: gzip\r\n"))
        elif path == "/broken":
            conn.sendall(plain(b'{"name": "broken", "versions": {"1.0.0": {"dist": ', "application/json"))
        elif path == "/pypi/broken/json":
            conn.sendall(plain(b'{"info": {"name": "broken"}, "urls": [', "application/json"))
        elif path == "/index.yaml":
            conn.sendall(plain(b"apiVersion: v1\nentries:\n  a: [{version: 1.0.0, urls: [x]\n", "application/x-yaml"))
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits[path]

    def stop(self) -> None:
        self.sock.close()


def hostile_remotes(port: int, read_timeout: int) -> dict:
    base = f"http://127.0.0.1:{port}"
    timeouts = {"connect": 2, "read": read_timeout}
    return {
        "hgen": {"base_url": base, "package": "generic", "timeouts": timeouts},
        "hnpm": {"base_url": base, "package": "npm", "timeouts": timeouts},
        "hpypi": {"base_url": base, "package": "pypi", "timeouts": timeouts},
        "hhelm": {"base_url": base, "package": "helm", "timeouts": timeouts},
    }


def client_path(upstream_path: str) -> str:
    """The request to artifactd that reaches `upstream_path` of the hostile upstream."""
    if upstream_path.endswith(".bin"):
        return f"/api/v1/remote/hgen{upstream_path}"
    if upstream_path.startswith("/pypi/"):
        return f"/api/v1/remote/hpypi{upstream_path}"
    if upstream_path == "/index.yaml":
        return "/api/v1/remote/hhelm/index.yaml"
    return f"/api/v1/remote/hnpm{upstream_path}"


def raw_exchange(port: int, data: bytes, timeout: float = 10, tls: ssl.SSLContext | None = None) -> tuple[list[int], bool]:
    """Sends `data`, reads until the server closes or `timeout`; the statuses
    of every response seen, and whether the server closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    got = b""
    closed = False
    try:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except socket.timeout:
        pass
    except OSError:
        closed = True
    finally:
        sock.close()
    statuses = [int(part[:3]) for part in got.split(b"HTTP/1.1 ")[1:] if part[:3].isdigit()]
    return statuses, closed


# name -> (raw request, statuses that are a refusal)
SMUGGLING = {
    "CL and TE together": (
        b"POST /api/v1/remote/gen/small/1.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 58\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/remote/gen/smuggled/1 HTTP/1.1\r\nHost: x\r\n\r\n"),
    "two Content-Length": (
        b"GET /api/v1/remote/gen/small/1.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 53\r\n\r\n"
        b"GET /api/v1/remote/gen/smuggled/2 HTTP/1.1\r\nHost: x\r\n\r\n"),
    "obs-fold": (
        b"GET /api/v1/remote/gen/small/1.bin HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"),
    "Transfer-Encoding: chunked, identity": (
        b"POST /api/v1/remote/gen/small/1.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
        b"0\r\n\r\nGET /api/v1/remote/gen/smuggled/3 HTTP/1.1\r\nHost: x\r\n\r\n"),
    "oversized header": (
        b"GET /api/v1/remote/gen/small/1.bin HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"),
    "oversized URI": (b"GET /api/v1/remote/gen/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
}


def slowloris(port: int, connections: int, seconds: float) -> tuple[int, int]:
    """`connections` clients dripping header lines every second for up to
    `seconds`; how many were answered 408, and how many were cut off
    another way (or never answered)."""
    answered_408 = Counter()

    def drip() -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=seconds + 5)
            sock.sendall(b"GET /api/v1/remote/gen/small/1.bin HTTP/1.1\r\nHost: x\r\n")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                sock.sendall(b"X-Drip: 1\r\n")
                sock.settimeout(1)
                try:
                    data = sock.recv(4096)
                    answered_408["408" if b" 408 " in data[:20] else "other"] += 1
                    return
                except socket.timeout:
                    pass
            answered_408["unanswered"] += 1
        except OSError:
            answered_408["other"] += 1

    threads = [threading.Thread(target=drip, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    return answered_408["408"], connections - answered_408["408"]


def idle_flood(port: int, count: int) -> tuple[list[socket.socket], int]:
    """Opens `count` connections that send nothing; the sockets, and how
    many could not be opened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 4096)), hard))
    socks, refused = [], 0
    for _ in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            refused += 1
    return socks, refused


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of `socks` the server has closed."""
    closed = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def h2_connect(port: int):
    """An HTTP/2 connection over TLS (ALPN h2): the socket and its state."""
    try:
        import h2.connection
    except ImportError:
        # Debian's python3-h2, when another python3 comes first on PATH.
        sys.path.append("/usr/lib/python3/dist-packages")
    import h2.config
    import h2.connection

    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    tls.set_alpn_protocols(["h2"])
    sock = tls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
    if sock.selected_alpn_protocol() != "h2":
        raise SystemExit("the TLS listener did not speak h2")
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                                                      normalize_outbound_headers=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def h2_length_mismatch(port: int, origin_fetches) -> dict:
    """A PUT whose `content-length` says 10 and whose DATA carries 20
    bytes: the stream must be refused, and nothing reach an upstream."""
    sock, conn = h2_connect(port)
    import h2.events

    headers = [(":method", "PUT"), (":scheme", "https"), (":authority", "localhost"),
               (":path", "/api/v1/remote/gen/smuggled/h2"), ("content-length", "10")]
    conn.send_headers(1, headers)
    conn.send_data(1, b"x" * 20, end_stream=True)
    sock.sendall(conn.data_to_send())
    outcome, deadline = "no answer", time.monotonic() + 5
    sock.settimeout(1)
    while time.monotonic() < deadline and outcome == "no answer":
        try:
            data = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        if not data:
            outcome = "connection closed"
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                outcome = "status " + dict(event.headers).get(b":status", b"?").decode()
            elif isinstance(event, h2.events.StreamReset):
                outcome = f"stream reset ({event.error_code.name})"
            elif isinstance(event, h2.events.ConnectionTerminated):
                outcome = f"GOAWAY ({event.error_code.name})"
        sock.sendall(conn.data_to_send())
    sock.close()
    return {"outcome": outcome, "reached_upstream": origin_fetches("/smuggled/h2")}


def rapid_reset(port: int, streams: int, seconds: float) -> dict:
    """HTTP/2 rapid reset (CVE-2023-44487) over TLS: HEADERS then RST_STREAM
    for `streams` streams, as fast as the connection takes them, for at
    most `seconds`. What happened: streams sent, and whether the server
    sent GOAWAY or closed."""
    sock, conn = h2_connect(port)
    import h2.events

    headers = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
               (":path", "/api/v1/remote/gen/small/1.bin")]
    sent, goaway, closed, error = 0, False, False, ""
    reasons = []
    deadline = time.monotonic() + seconds
    sock.settimeout(0.001)
    stream_id = 1
    while sent < streams and time.monotonic() < deadline and not (goaway or closed):
        for _ in range(100):
            conn.send_headers(stream_id, headers, end_stream=True)
            conn.reset_stream(stream_id)
            stream_id += 2
            sent += 1
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            closed = True
            break
        try:
            data = sock.recv(65536)
            if not data:
                closed = True
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    goaway = True
                    reasons.append(str(event.error_code))
        except (socket.timeout, ssl.SSLWantReadError):
            pass
        except Exception as e:  # noqa: BLE001 - a protocol error from the server counts as refused
            closed = True
            error = f"{type(e).__name__}: {e}"[:120]
    sock.close()
    return {"streams": sent, "goaway": goaway, "closed": closed, "error": error, "reasons": reasons}


def self_signed(dir: Path) -> tuple[Path, Path]:
    import subprocess
    cert, key = dir / "cert.pem", dir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return cert, key
