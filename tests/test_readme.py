"""The README and docs/FIRST_HOUR.md stay true to the code: every command they show parses.

A newcomer pastes these commands. Each `python -m offline_train.<verb> ...`,
`python -m safefql_ros.<node> ...` and `safefql-* ...` line of their ```bash blocks is checked
against the command's own argument parser, captured while the command's `main` parses and
stopped before it does any work: the command without its `[optional]` parts must parse, and
every flag inside those parts must be one the command knows (with `a|b|c` values among its
choices). The repository files and modules the documents name must exist, and so must the
console scripts they call. Nothing is run, so the check takes seconds.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "FIRST_HOUR.md"]
# Where the documented commands write: named in the documents, created by running them.
OUTPUT_DIRS = ("data/", "runs/", "bags/", "results/")
MODULE_PREFIXES = ("offline_train.", "safefql_ros.", "safefql_core.")


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """The block's commands: comments dropped, `\\` continuations joined, `&&` chains split."""
    lines, current = [], ""
    for raw in block.splitlines():
        line = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        current += line.rstrip().removesuffix("\\")
        if not line.rstrip().endswith("\\"):
            lines += [c.strip() for c in current.split("&&") if c.strip()]
            current = ""
    return lines


def documented_commands() -> list[tuple[str, str]]:
    """(document name, command) for every command of every ```bash block."""
    found = []
    for doc in DOCUMENTS:
        if doc.is_file():
            for block in bash_blocks(doc.read_text()):
                found += [(doc.name, c) for c in commands(block)]
    return found


def console_scripts() -> dict[str, str]:
    """setup.py's console scripts: name -> module."""
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r"'([\w-]+) = ([\w.]+):main'", text))


def entry_point(command: str) -> tuple[str, list[str]] | None:
    """(module, argument words) of one of our commands; None for anything else (make, ros2, ...)."""
    words = shlex.split(command.replace("[", " [ ").replace("]", " ] "))
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        words.pop(0)
    if not words:
        return None
    if words[0].endswith("python") and words[1:2] == ["-m"] and words[2].startswith(MODULE_PREFIXES):
        return words[2], words[3:]
    if words[0].startswith("safefql-"):
        scripts = console_scripts()
        assert words[0] in scripts, f"{words[0]} is not a console script of setup.py ({sorted(scripts)})"
        return scripts[words[0]], words[1:]
    return None


def split_optional(words: list[str]) -> tuple[list[str], list[list[str]]]:
    """The words outside [...] (nesting allowed) and each bracketed group's words."""
    required, groups, depth = [], [], 0
    for word in words:
        if word == "[":
            depth += 1
            if depth == 1:
                groups.append([])
        elif word == "]":
            depth -= 1
        elif depth:
            groups[-1].append(word)
        else:
            required.append(word)
    assert depth == 0, f"unbalanced [ ] in {' '.join(words)}"
    return required, groups


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
        self.parser, self.namespace = parser, namespace


def parse_only(module: str, argv: list[str], monkeypatch) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Run `module.main(argv)` up to its parse_args and stop there: the parser and what it
    parsed. A parse error (argparse's SystemExit) fails the test with argparse's message."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        raise _Parsed(self, original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    main = importlib.import_module(module).main
    try:
        main(argv)
    except _Parsed as parsed:
        return parsed.parser, parsed.namespace
    except SystemExit as exc:
        pytest.fail(f"`{module} {' '.join(argv)}` does not parse (exit {exc.code}; argparse's message above)")
    pytest.fail(f"{module}.main returned without parsing its arguments with argparse")


def options(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> dict[str, argparse.Action]:
    """Every option string the command accepts, a chosen subcommand's included."""
    known = dict(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(namespace, action.dest)
            known.update(action.choices[chosen]._option_string_actions)
    return known


COMMANDS = [(doc, c) for doc, c in documented_commands() if entry_point(c) is not None]


def test_documents_show_commands():
    """The extraction finds the commands (a changed block syntax must not pass silently)."""
    docs = {doc for doc, _ in COMMANDS}
    assert "README.md" in docs and len(COMMANDS) >= 25, COMMANDS


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{d}:{c[:70]}" for d, c in COMMANDS])
def test_command_parses(doc, command, monkeypatch):
    module, words = entry_point(command)
    required, groups = split_optional(words)
    parser, namespace = parse_only(module, required, monkeypatch)
    known = options(parser, namespace)
    for group in groups:
        for i, word in enumerate(group):
            if not word.startswith("--"):
                continue
            flag = word.split("=", 1)[0]
            assert flag in known, f"{doc}: `{command}` shows {flag}, which {module} does not accept"
            choices = known[flag].choices
            value = group[i + 1] if i + 1 < len(group) else ""
            if choices is not None and "|" in value:
                unknown = set(value.split("|")) - set(choices)
                assert not unknown, f"{doc}: {flag} {value}: {sorted(unknown)} not among {sorted(choices)}"


def referenced_paths(text: str) -> set[str]:
    """Repository paths the text names in `code`, in (links), and any *.md: a folder/file.ext shape."""
    candidates = (re.findall(r"`([\w./<>-]+)`", text) + re.findall(r"\]\(([\w./-]+)\)", text)
                  + re.findall(r"[\w./-]+\.md\b", text))  # any document named, quoted or not
    return {c for c in candidates
            if re.fullmatch(r"[\w.-]+(/[\w.-]+)*/?", c) and ("/" in c or re.search(r"\.(md|py|yaml|txt)$", c))
            and not c.startswith(OUTPUT_DIRS) and not c.startswith(("/", "."))}


def repository_files() -> set[str]:
    """Names of the repository's files, for a bare file name (`boat.launch.py`)."""
    skip = {".git", ".venv", "__pycache__", "build", "install", "log", "data", "runs", "bags", "results"}
    return {f.name for f in ROOT.rglob("*") if not skip & set(f.relative_to(ROOT).parts)}


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if d.is_file()], ids=lambda d: d.name)
def test_referenced_files_and_modules_exist(doc):
    text = doc.read_text()
    names = repository_files()
    missing = [path for path in sorted(referenced_paths(text))
               if not ((doc.parent / path).exists() or (ROOT / path).exists()
                       or ("/" not in path.rstrip("/") and path.rstrip("/") in names))]
    for module in sorted(set(re.findall(r"python -m ((?:offline_train|safefql_ros)\.\w+)", text))):
        if importlib.util.find_spec(module) is None:
            missing.append(module)
    assert not missing, f"{doc.name} names what the repository does not have: {missing}"


def test_drift_is_caught(monkeypatch):
    """The checks above fail on a command that no longer matches its parser."""
    module, words = entry_point("python -m offline_train.export --run runs/boat --out runs/boat/bundle")
    parse_only(module, words, monkeypatch)
    with pytest.raises(pytest.fail.Exception):
        parse_only(module, ["--run", "runs/boat", "--output", "x"], monkeypatch)
    assert "docs/NO_SUCH.md" in referenced_paths("see [`docs/NO_SUCH.md`](docs/NO_SUCH.md)")
