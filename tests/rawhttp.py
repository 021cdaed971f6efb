"""A request line sent exactly as given, over a plain socket.

HTTP clients normalise paths (aiohttp and httpx resolve `..`; some re-encode), which would
hide what a hostile client can send; this sends the bytes as they are.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

__all__ = ["Raw", "parse_head", "raw_request"]


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    port: int, target: bytes, method: bytes = b"GET", headers: dict[str, str] | None = None
) -> Raw:
    """Send one request line exactly as given; read the answer until the server closes."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n" % (
        method,
        target,
        extra.encode("latin-1"),
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        return Raw(0, {}, b"")  # closed without an answer
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status, answer_headers = parse_head(head_bytes)
    if answer_headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Raw(status, answer_headers, body)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (lower-case names) of a response head."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2 :]
