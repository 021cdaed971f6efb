"""An admin request with two Host headers is refused, whichever one is the gateway's."""

from __future__ import annotations

import json
import socket


def _post_clear(port: int, hosts: list[str]) -> tuple[int, dict[str, object]]:
    host_lines = "".join(f"Host: {host}\r\n" for host in hosts)
    head = (
        f"POST /api/cache/clear HTTP/1.1\r\n{host_lines}Content-Type: application/json\r\n"
        "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body)


def test_two_host_headers_are_refused(gateway_factory):
    gateway = gateway_factory()
    status, body = _post_clear(gateway.port, ["evil.example", "127.0.0.1"])
    assert status == 403
    assert "exactly one Host" in str(body)
    status, _ = _post_clear(gateway.port, ["127.0.0.1"])
    assert status == 200
