"""tools/mutation.py's bookkeeping: which function a mutant is in, what it changed, and which
recorded reason (tools/mutation_survivors.yaml) covers it. The mutation runs themselves take
hours and are `make mutation`, not part of the suite."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import mutation  # noqa: E402 (tools/ is not a package)


@pytest.mark.parametrize("name, function", [
    ("safefql_core.bundle.x__check_meta__mutmut_98", "_check_meta"),
    ("safefql_core.bundle.x_load_bundle__mutmut_7", "load_bundle"),
    ("safefql_core.bundle.xǁBundleǁcheck_threshold__mutmut_7", "Bundle.check_threshold"),
    ("safefql_core.runtime.xǁRuntimeǁ__init____mutmut_24", "Runtime.__init__"),
])
def test_a_mutants_name_gives_its_function(name, function):
    assert mutation.function_of(name) == function


def test_a_diff_gives_the_original_and_the_mutated_line():
    diff = ("--- safefql_core/bundle.py\n+++ safefql_core/bundle.py\n@@ -1,2 +1,2 @@\n"
            " def f():\n-    if a <= b:\n+    if a < b:\n")
    assert mutation.changed_lines(diff) == ("if a <= b:", "if a < b:")


def test_every_recorded_reason_names_a_module_function_and_pattern():
    import yaml
    entries = yaml.safe_load(mutation.REASONS.read_text())
    assert entries and all(set(e) == {"module", "function", "change", "reason"} for e in entries)
    assert {e["module"] for e in entries} <= set(mutation.TESTS)
    for e in entries:
        re.compile(e["change"])
        assert len(e["reason"]) > 20, e


def test_a_reason_covers_only_its_own_function_and_change():
    reasons = [{"module": "bundle", "function": "Bundle.check_threshold", "change": r"cast\(None", "reason": "r"}]
    name = "safefql_core.bundle.xǁBundleǁcheck_threshold__mutmut_7"
    assert mutation.reason_for("bundle", name, "lo <= cast(None, value)", reasons) == "r"
    assert mutation.reason_for("bundle", name, "lo < cast(float, value)", reasons) is None
    assert mutation.reason_for("runtime", name, "lo <= cast(None, value)", reasons) is None
    assert mutation.reason_for("bundle", name.replace("check_threshold", "task_spec"), "cast(None", reasons) is None
