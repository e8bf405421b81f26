"""The docs stay navigable. Their relative links resolve: the record (docs/BENCHMARKS.md) and
docs/DESIGN.md cite their evidence by links into docs/notebook/, so a moved file or a renamed
heading must fail here rather than leave a reader at a dead end. And every module is named in
the README tour and in DESIGN.md's structure."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped, lower case, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip()).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (repeated headings get GitHub's -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slug_matches_github_for_the_punctuation_the_docs_use():
    assert slug("`make demo` (issue 5): fresh clone to DDS summary") == \
        "make-demo-issue-5-fresh-clone-to-dds-summary"
    assert slug("Benchmark suite: every method × seed (issue 6)") == \
        "benchmark-suite-every-method--seed-issue-6"
    assert slug("Safety Gymnasium, sessions 12–13 (2026-12-02/03)") == \
        "safety-gymnasium-sessions-1213-2026-12-0203"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(doc: Path):
    broken = []
    for target in LINK.findall(FENCE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no file {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def section(path: Path, heading: str) -> str:
    """The text of a markdown section, from its heading to the next heading of the same level."""
    text = path.read_text()
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    end = text.find(f"\n{level} ", start + len(heading) + 2)
    return text[start:end if end != -1 else len(text)]


@pytest.mark.parametrize("doc, heading", [("README.md", "## Tour"), ("docs/DESIGN.md", "## Structure")])
def test_every_module_is_named_where_newcomers_look(doc, heading):
    """A module added without a line in the README tour and in DESIGN.md's structure is found
    by nobody who starts from the docs."""
    text = section(ROOT / doc, heading)
    modules = [p.stem for package in ("safefql_core", "safefql_core/envs", "offline_train", "safefql_ros")
               for p in sorted((ROOT / package).glob("*.py")) if p.stem != "__init__"]
    missing = [m for m in modules if f"`{m}`" not in text and f"/{m}.py`" not in text]
    assert not missing, f"{doc}, {heading!r} does not name: {missing}"


@pytest.mark.parametrize("doc", DOCS[:1] + [ROOT / "docs/DESIGN.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_source_file_the_docs_name_exists(doc: Path):
    named = set(re.findall(r"\b((?:safefql_core|offline_train|safefql_ros|tests|config)/[\w/.-]+\.(?:py|yaml))\b",
                           doc.read_text()))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc.name} names files that do not exist: {missing}"
