"""RawMemo: what a repeated request body maps to, bounded in entries and body size."""

from __future__ import annotations

from promptrelay.cache.keys import RawMemo


def test_keeps_at_most_its_entries_dropping_the_oldest():
    memo: RawMemo[int] = RawMemo(entries=3, max_raw=100)
    for n in range(5):
        memo.put((b"body %d" % n, "ns"), n)
    assert len(memo) == 3
    assert memo.get((b"body 0", "ns")) is None
    assert memo.get((b"body 1", "ns")) is None
    assert [memo.get((b"body %d" % n, "ns")) for n in (2, 3, 4)] == [2, 3, 4]


def test_a_body_over_max_raw_is_not_kept_and_the_whole_tuple_selects():
    memo: RawMemo[str] = RawMemo(entries=10, max_raw=8)
    memo.put((b"123456789", "ns"), "long")
    memo.put((b"12345678", "ns"), "short")
    assert memo.get((b"123456789", "ns")) is None
    assert memo.get((b"12345678", "ns")) == "short"
    assert memo.get((b"12345678", "other ns")) is None
    assert len(memo) == 1
