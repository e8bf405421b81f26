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


PACKAGES = sorted(str(init.parent.relative_to(ROOT)) for top in ("safefql_core", "offline_train", "safefql_ros")
                  for init in (ROOT / top).rglob("__init__.py"))


def modules(package: str) -> set[str]:
    """The modules of one package (not of its subpackages), by stem."""
    return {p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}


def scope(text: str, package: str) -> str:
    """Where a section lists one package's modules by bare name: the README tour's table row
    `| `pkg/` | ...`, or DESIGN.md's list item `- `pkg/`...` with the items nested under it
    (up to the next item as deep or less, or a paragraph)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"| `{package}/` |"):
            return line
        item = re.match(rf"( *)- `{re.escape(package)}/`", line)
        if item:
            indent = len(item.group(1))
            end = next((j for j in range(i + 1, len(lines))  # the next item as deep or less, or a paragraph
                        if re.match(rf" {{0,{indent}}}- ", lines[j]) or re.match(r"[^\s-]", lines[j])), len(lines))
            return "\n".join(lines[i:end])
    return ""


@pytest.mark.parametrize("doc, heading", [("README.md", "## Tour"), ("docs/DESIGN.md", "## Structure")])
def test_every_module_is_named_where_newcomers_look(doc, heading):
    """Both ways: a module added without a line in the README tour and in DESIGN.md's
    structure is found by nobody who starts from the docs, and a module named there that was
    moved or removed sends the reader to nothing. A package's modules are named as
    `pkg/module.py` anywhere in the section or by bare name where the section lists that
    package (the packages, subpackages included, are found on disk, so a new one must be
    listed too)."""
    text = section(ROOT / doc, heading)
    missing, stale = [], []
    for package in PACKAGES:
        listed = set(re.findall(r"`(\w+)`", scope(text, package)))
        named = listed | set(re.findall(rf"`{re.escape(package)}/(\w+)\.py`", text))
        missing += [f"{package}/{m}" for m in sorted(modules(package) - named)]
        stale += [f"{package}/{m}" for m in sorted(listed - modules(package))]
    assert not missing, f"{doc}, {heading!r} does not name: {missing}"
    assert not stale, f"{doc}, {heading!r} lists modules that do not exist: {stale}"


def test_the_record_stays_a_record():
    """docs/BENCHMARKS.md holds the current tables, not the history (that goes to
    docs/notebook/, linked): at most 250 lines, with a section for each kind of number."""
    record = ROOT / "docs" / "BENCHMARKS.md"
    lines = record.read_text().splitlines()
    assert len(lines) <= 250, f"docs/BENCHMARKS.md has {len(lines)} lines (at most 250): move history to docs/notebook/"
    headings = {line[3:] for line in lines if line.startswith("## ")}
    assert {"Boat benchmark suite", "Safety Gymnasium", "Decision latency", "Closed loop through DDS",
            "Bag conversion", "Training time"} <= headings, headings
    notebook = {link for link in LINK.findall(record.read_text()) if link.startswith("notebook/")}
    assert len(notebook) >= 5, notebook  # the history is linked (the links themselves: test above)


@pytest.mark.parametrize("doc", DOCS[:1] + [ROOT / "docs/DESIGN.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_source_file_the_docs_name_exists(doc: Path):
    named = set(re.findall(r"\b((?:safefql_core|offline_train|safefql_ros|tests|config)/[\w/.-]+\.(?:py|yaml))\b",
                           doc.read_text()))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc.name} names files that do not exist: {missing}"
