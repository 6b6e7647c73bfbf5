"""Every link between the README and the docs points at a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """Return the text outside fenced blocks and inline code (links there are not links)."""
    return CODE.sub("", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """Return the anchors GitHub gives the page's headings (`How \\`run\\` works` -> how-run-works)."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(pages: list[Path] = PAGES) -> list[tuple[Path, str]]:
    """Return (page, target) for every markdown link in the pages."""
    return [(page, m.group(1)) for page in pages for m in LINK.finditer(prose(page.read_text()))]


def test_the_docs_exist_and_link_to_each_other() -> None:
    assert len(PAGES) >= 10, PAGES
    targets = {(page.parent / t.split("#")[0]).resolve() for page, t in links() if "://" not in t}
    readme_links = {t for page, t in links() if page.name == "README.md" and page.parent == ROOT}
    for doc in (ROOT / "docs").glob("*.md"):
        assert doc.resolve() in targets, f"nothing links to {doc.relative_to(ROOT)}"
        assert any(t.split("#")[0] == f"docs/{doc.name}" for t in readme_links), doc.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for _, target in links([page]):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"({target}): no such file")
        elif anchor and anchor not in anchors(dest):
            broken.append(f"({target}): no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)
