"""The install, reference, decision, tuning, troubleshooting and kind pages link only to what exists."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

PAGES = ["install.md", "reference.md", "how-it-decides.md", "tuning.md", "troubleshooting.md", "kind.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to -."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    path = REPO / "docs" / page
    broken = []
    # Code spans can look like links (regular expressions in the reference), so they are dropped first.
    prose = re.sub(r"`[^`]*`", "", path.read_text())
    for target in LINK.findall(prose):
        if target.startswith(("http://", "https://")):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part) if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and anchor not in _anchors(linked.read_text()):
            broken.append(target)

    assert broken == []


@pytest.mark.parametrize("page", PAGES)
def test_paths_in_backticks_exist(page):
    """Repository paths the page names in backticks (charts/, manifests/, hack/, docs/ ...) exist."""
    text = (REPO / "docs" / page).read_text()
    paths = re.findall(r"`((?:charts|manifests|hack|docs|operator|model_server|tests|reports)/[\w./-]*)`", text)
    missing = [p for p in paths if "*" not in p and not (REPO / p.rstrip("/")).exists()
               and not p.startswith("reports/")]

    assert missing == []
