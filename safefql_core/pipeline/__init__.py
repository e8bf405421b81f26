"""The offline pipeline's steps as functions that return data: collect, convert, train,
calibrate, export, evaluate (and the diff-drive robot's evaluation), replay's report.

The `offline_train` commands parse arguments, call these and print what they return;
`fit --bag` and `benchmark` chain the same functions instead of calling other commands. A
step reports progress only through what it is passed (a `log` callable, a progress flag), so
a caller inside a Ray worker or a test decides what reaches the terminal.
"""
from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]  # where a step's notes go ("wrote ...", "replacing ..."): print, a logger


def quiet(_: str) -> None:
    """The default `Log`: a step called as a function says nothing."""
