"""The per-request writer: a declared-length head goes out with the first body write,
and a body sent in several chunks is never gathered."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from promptrelay.server.protocol import _Writer


class Recording:
    """A transport that keeps each write call's bytes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def _writer(*, length: int, chunked: bool = False) -> tuple[_Writer, Recording, Any]:
    transport = Recording()
    cycle = SimpleNamespace(chunked_encoding=chunked, expected_content_length=length)
    return _Writer(transport, cycle), transport, cycle  # type: ignore[arg-type]


def test_a_whole_answer_goes_out_in_one_write() -> None:
    writer, transport, cycle = _writer(length=5)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    assert transport.writes == []
    cycle.expected_content_length = 0  # uvicorn counts the body down before writing it
    writer.write(b"hello")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]


def test_a_body_in_chunks_is_written_as_it_comes_not_gathered() -> None:
    writer, transport, cycle = _writer(length=9)
    writer.write(b"HEAD\r\n\r\n")
    for left, chunk in ((6, b"abc"), (3, b"def"), (0, b"ghi")):
        cycle.expected_content_length = left
        writer.write(chunk)
    assert transport.writes == [b"HEAD\r\n\r\nabc", b"def", b"ghi"]


def test_chunked_heads_and_held_heads_at_the_end_are_written() -> None:
    writer, transport, _ = _writer(length=0, chunked=True)
    writer.write(b"HEAD\r\n\r\n")
    assert transport.writes == [b"HEAD\r\n\r\n"]
    held, held_transport, _ = _writer(length=4)
    held.write(b"HEAD-only\r\n\r\n")  # a HEAD answer: no body follows
    held.flush()
    assert held_transport.writes == [b"HEAD-only\r\n\r\n"]
