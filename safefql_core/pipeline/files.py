"""Where the pipeline's steps put things inside a run directory, named once for every step,
and the check every output file passes before the work that fills it.

`fit --bag` converts into the run, trains, calibrates and exports into it; `calibrate` and
`export` on their own read and write the same places, so a run can be taken up by either.
"""
from __future__ import annotations

from pathlib import Path

from safefql_core.training import RunError

DATASET = "dataset.h5"                      # fit --bag's conversion
BUNDLE = "bundle"                           # fit --bag's bundle
CALIBRATION_FILE = "calibration.json"       # calibrate's δ*, read by export
CALIBRATION_PLOT = "calibration_scores.png"  # calibrate's score histogram (unless --plot)


def prepare_output_file(path: str | Path | None, flag: str) -> Path | None:
    """Check an output file's path before the work that fills it: create its folder, refuse
    a directory. A command that finds out only when it writes has spent its minutes in vain."""
    if path is None:
        return None
    file = Path(path)
    if file.is_dir():
        raise RunError(f"{flag} {file} is a directory; give the name of a file to write (inside it, or elsewhere)")
    file.parent.mkdir(parents=True, exist_ok=True)
    return file
