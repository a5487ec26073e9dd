"""Every relative link in README.md, CHANGELOG.md and docs/*.md resolves: the file exists inside the
repository and, for ``file.md#anchor``, the heading exists there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")  # inline code: no links in it


def documents() -> list[Path]:
    return [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


def broken_links(path: Path, repo: Path = REPO) -> list[str]:
    """The relative links of ``path`` that point outside ``repo``, to nothing, or to a heading
    their target does not have."""
    broken = []
    for target in LINK.findall(CODE.sub("", FENCE.sub("", path.read_text()))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file, _, fragment = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if repo not in resolved.parents and resolved != repo:
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target} (no such heading in {resolved.name})")
    return broken


def test_the_documents_exist():
    assert all(p.exists() for p in documents()), [str(p) for p in documents() if not p.exists()]
    assert len(documents()) >= 6  # README, CHANGELOG and four docs


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    assert broken_links(doc) == []


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## A section (2026)\n")
    doc = tmp_path / "README.md"
    doc.write_text("[ok](docs/a.md) [ok](docs/a.md#a-section-2026) [self](#top) [web](https://x.org/y)\n"
                   "[gone](docs/b.md) [heading](docs/a.md#nope) [out](../shared/reference/x.md)\n"
                   "```\n[in a code block](nowhere.md)\n```\n`[inline](code.md)`\n# Top\n")
    assert broken_links(doc, tmp_path) == ["docs/b.md (no such file)", "docs/a.md#nope (no such heading in a.md)",
                                 "../shared/reference/x.md (outside the repository)"]


def test_the_readme_is_short_and_names_no_issue_or_commit():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\bissue #?\d+", text, re.I), "history belongs in CHANGELOG.md"
    assert not re.search(r"\b(commit\s+`?[0-9a-f]{7,40}|`[0-9a-f]{7,40}`)", text), "history belongs in CHANGELOG.md"
