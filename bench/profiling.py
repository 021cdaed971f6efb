"""Sample a running server with py-spy under load and summarise where its CPU goes.

py-spy comes with the `bench` extra (`make bench` installs it). It reads the target's
stacks from outside (ptrace), so the server needs no changes; sampling does slow it a
little, which is why profiles are taken in their own load window, never a timed one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchkit import BIN_DIR, markdown_table

_LINE_NUMBER = re.compile(r":\d+\)$")


@dataclass(frozen=True)
class Profile:
    samples: int
    own: Counter[str]  # frame -> samples where it was the innermost frame
    total: Counter[str]  # frame -> samples where it was anywhere on the stack


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found is None and (BIN_DIR / "py-spy").exists():
        found = str(BIN_DIR / "py-spy")
    return found


def record(executable: str, pid: int, seconds: int, drive: Callable[[], object]) -> Profile:
    """Sample `pid` for `seconds` while `drive()` keeps it busy (idle samples dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        argv = [executable, "record", "--format", "raw", "--rate", "200", "--pid", str(pid)]
        argv += ["--duration", str(seconds), "--output", str(raw)]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            drive()
        finally:
            _, stderr = spy.communicate(timeout=seconds + 30)
        if spy.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {stderr.decode()}")
        return parse(raw.read_text())


def parse(collapsed: str) -> Profile:
    """Collapsed stacks, one `frame;frame;...;leaf count` a line; line numbers dropped."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return Profile(samples, own, total)


def report(profile: Profile, top: int = 10) -> str:
    """Two tables: the frames burning the most samples themselves, and the heaviest
    promptrelay frames counting what they call."""

    def pct(n: int) -> str:
        return f"{100 * n / profile.samples:.1f}%" if profile.samples else "—"

    own_rows = [
        [f"`{frame}`", pct(n), pct(profile.total[frame])]
        for frame, n in profile.own.most_common(top)
    ]
    # Frames on every stack (the CLI entry) say nothing about where the time goes.
    ours = Counter(
        {f: n for f, n in profile.total.items() if "(promptrelay/" in f and n < profile.samples}
    )
    total_rows = [[f"`{frame}`", pct(n)] for frame, n in ours.most_common(top)]
    return "\n\n".join(
        [
            f"Top {top} frames by own time ({profile.samples} non-idle samples; own time "
            "of `Runner.run` is the event loop's C code: uvloop, httptools, socket I/O):",
            markdown_table(["frame", "own", "inclusive"], own_rows),
            f"Top {top} promptrelay frames by inclusive time:",
            markdown_table(["frame", "inclusive"], total_rows),
        ]
    )
