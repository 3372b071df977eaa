"""Clients that need many concurrent connections without Python threads.

Filling a cache with many small objects fast: a bounded number of
keep-alive connections driven by asyncio (no pipelining: pingora closes a
connection that has a next request buffered behind a response), checking
every response is a 200 with the expected length. Used to put up to a
million objects into each proxy in the same way before a hit run. And a
thundering herd whose times to first byte are not skewed by thread
scheduling."""

from __future__ import annotations

import asyncio
import time

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


async def _timed_get(port: int, path: str) -> tuple[float, float, float, int]:
    """(start, first body byte, end, body bytes) of one GET, on one clock."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise SystemExit(f"{path}: HTTP {status.decode()}")
        first = await reader.read(1)
        t_first = time.perf_counter()
        total = len(first)
        while chunk := await reader.read(1 << 18):
            total += len(chunk)
        return t0, t_first, time.perf_counter(), total
    finally:
        writer.close()


def herd(port: int, path: str, clients: int) -> list[tuple[float, float, float, int]]:
    """`clients` concurrent GETs of one path from one event loop (no thread
    scheduling in the times): (start, first body byte, end, bytes) each."""
    return herd_spread([port], path, clients)


def herd_spread(ports: list[int], path: str, clients: int) -> list[tuple[float, float, float, int]]:
    """[`herd`] with the clients spread round-robin over `ports` (the nodes
    of a cluster)."""
    async def run() -> list[tuple[float, float, float, int]]:
        return await asyncio.gather(*(_timed_get(ports[i % len(ports)], path) for i in range(clients)))
    return asyncio.run(run())
