#!/usr/bin/env python3
"""The origin of scenario 12 (benches/large.py): one file under every path,
sent at most RATE bytes per second per connection, as object stores and
CDNs cap each connection; with --cut, every connection is closed after
that many body bytes (counted across the requests it carries). Single
ranges (`a-b`, `a-`, `-n`) with `If-Range`, a strong ETag, and one log
line per request (path and Range) for counting upstream requests.

Bodies go out with sendfile in paced pieces: the origin costs little CPU
beside the servers it feeds.

Usage: capped_origin.py PORT FILE RATE LOG [--cut BYTES]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ETAG = '"large-v1"'
LAST_MODIFIED = "Mon, 01 Jun 2026 00:00:00 GMT"
PIECE = 256 * 1024


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as a half-open span, or None."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", (value or "").strip())
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    return (start, end) if start < end else None


def handler(path: str, rate: int, cut: int | None, log, lock: threading.Lock):
    size = os.path.getsize(path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.sent_on_connection = 0

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            span = parse_range(asked, size) if if_range in (None, ETAG, LAST_MODIFIED) else None
            with lock:
                log.write(f"{self.path} {asked or '-'}\n")
                log.flush()
            start, end = span or (0, size)
            self.send_response(206 if span else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", ETAG)
            self.send_header("Last-Modified", LAST_MODIFIED)
            if span:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            self.send_body(start, end)

        def send_body(self, start: int, end: int) -> None:
            began, sent = time.monotonic(), 0
            with open(path, "rb") as f:
                while start + sent < end:
                    n = min(PIECE, end - start - sent)
                    if cut is not None:
                        n = min(n, cut - self.sent_on_connection)
                    if n <= 0:
                        # The cut: close with the body short.
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    n = os.sendfile(self.connection.fileno(), f.fileno(), start + sent, n)
                    sent += n
                    self.sent_on_connection += n
                    due = sent / rate - (time.monotonic() - began)
                    if due > 0:
                        time.sleep(due)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("file")
    parser.add_argument("rate", type=int)
    parser.add_argument("log")
    parser.add_argument("--cut", type=int)
    args = parser.parse_args()
    with open(args.log, "a") as log:
        server = ThreadingHTTPServer(("127.0.0.1", args.port),
                                     handler(args.file, args.rate, args.cut, log, threading.Lock()))
        server.daemon_threads = True
        server.serve_forever()


if __name__ == "__main__":
    main()
