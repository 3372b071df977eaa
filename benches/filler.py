"""Filling a cache with many small objects fast: a bounded number of
keep-alive connections driven by asyncio (no pipelining: pingora closes a
connection that has a next request buffered behind a response), checking
every response is a 200 with the expected length. Used to put up to a
million objects into each proxy in the same way before a hit run."""

from __future__ import annotations

import asyncio

CONNECTIONS = 64


async def _connection(port: int, paths: list[str], expect_bytes: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        for path in paths:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = lines[0].split(" ", 2)[1]
            length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith("content-length:")), None)
            if status != "200" or length is None:
                raise SystemExit(f"fill {path}: {lines[0]} (length {length})")
            body = await reader.readexactly(length)
            if expect_bytes and len(body) != expect_bytes:
                raise SystemExit(f"fill {path}: {len(body)} bytes")
    finally:
        writer.close()


async def _fill(port: int, paths: list[str], expect_bytes: int) -> None:
    groups = [paths[i::CONNECTIONS] for i in range(CONNECTIONS)]
    await asyncio.gather(*(_connection(port, g, expect_bytes) for g in groups if g))


def fill_fast(port: int, paths: list[str], expect_bytes: int = 0) -> None:
    """Requests every path once (bounded by len(paths))."""
    asyncio.run(_fill(port, paths, expect_bytes))
