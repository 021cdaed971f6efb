"""The README stays a short front door and every page it leads to exists.

Relative links in README.md and docs/*.md must resolve to a file or folder of the
repository, and a `#fragment` into a Markdown file must name one of its headings (GitHub's
anchor rule). No page may point outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250

# docs pages written on other branches; a link to one of them is skipped while the page
# is missing. Remove each name once its branch has merged.
LANDING_FROM_OTHER_BRANCHES = frozenset({"pool.md", "openai.md"})

OUTSIDE_REFERENCES = ("DESIGN.md", "STYLE.md", "../shared")

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return _FENCE.sub("", text)


def links(text: str) -> list[str]:
    return _LINK.findall(_CODE_SPAN.sub("", _prose(text)))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in _HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        slug = anchor(heading)
        n = 0
        while (f"{slug}-{n}" if n else slug) in found:
            n += 1
        found.add(f"{slug}-{n}" if n else slug)
    return found


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE))


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if is_external(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            in_docs = resolved.parent == root / "docs"
            if not (in_docs and resolved.name in LANDING_FROM_OTHER_BRANCHES):
                problems.append(f"{target}: no such file")
            continue
        if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return problems


def test_readme_is_a_short_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_links_every_docs_page() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in links(README.read_text(encoding="utf-8"))
        if not is_external(target)
    }
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert unlinked == []


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_points_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert [name for name in OUTSIDE_REFERENCES if name in text] == []


def test_the_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](#title) [gone](missing.md) [bad](#nowhere) [web](https://x.org)\n"
        "```\n[in code](also-missing.md)\n```\n`[span](span.md)`\n",
        encoding="utf-8",
    )
    assert links(page.read_text(encoding="utf-8")) == [
        "#title",
        "missing.md",
        "#nowhere",
        "https://x.org",
    ]
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file",
        "#nowhere: no heading #nowhere in page.md",
    ]
    assert anchor("`POST /api/generate`") == "post-apigenerate"
    assert anchor("Telemetry, memory guard and alerts") == "telemetry-memory-guard-and-alerts"
