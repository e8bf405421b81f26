"""Training settings live once: the config dataclasses' defaults are the boat's values, and a
task's YAML (config/<task>.yaml) sets only the keys where its task differs."""
from pathlib import Path

import pytest
import yaml

from safefql_core.agent import SafeFQLConfig
from safefql_core.bc import BCConfig
from safefql_core.fisor import FISORConfig
from safefql_core.pipeline.train import load_overrides
from safefql_core.safeifql import SafeIFQLConfig
from safefql_core.training import RunError

CONFIG = Path(__file__).resolve().parents[1] / "config"
BOAT_YAML = CONFIG / "boat.yaml"
TASK_YAMLS = sorted(p for p in CONFIG.glob("*.yaml") if "task" in (yaml.safe_load(p.read_text()) or {}))
SECTIONS = {"safefql": SafeFQLConfig, "bc": BCConfig, "fisor": FISORConfig, "safeifql": SafeIFQLConfig}


@pytest.mark.parametrize("path", TASK_YAMLS, ids=lambda p: p.name)
def test_a_task_yaml_sets_only_what_differs_from_the_defaults(path):
    """A value equal to its default only restates it, and stops being the task's choice the
    day the default changes: each value is written once."""
    doc = yaml.safe_load(path.read_text())
    for section, cls in SECTIONS.items():
        given = doc.get(section) or {}
        cls.from_dict(given)  # unknown keys or bad values raise
        defaults = cls().to_dict()
        restated = sorted(k for k, v in given.items() if defaults[k] == v)
        assert not restated, f"{path.name} {section}: {restated} equal the defaults; remove them"


def test_fit_without_config_reads_the_boats_yaml(tmp_path, monkeypatch):
    """`fit --task boat` (and `fit` with no task) trains with config/boat.yaml like any task:
    a section added there is a setting, not a comment."""
    import safefql_core.pipeline.train as train
    assert load_overrides(None, "bc") == ("boat", {}) == load_overrides(None, "bc", "boat")
    (tmp_path / "boat.yaml").write_text(BOAT_YAML.read_text() + "bc:\n  steps: 7\n")
    monkeypatch.setattr(train, "TASK_CONFIGS", tmp_path)
    assert load_overrides(None, "bc", "boat") == ("boat", {"steps": 7})
    assert load_overrides(None, "bc") == ("boat", {"steps": 7})


def test_load_overrides_picks_the_algo_section():
    task, overrides = load_overrides(str(CONFIG / "SafetyPointGoal1-v0.yaml"), "fisor")
    assert task == "SafetyPointGoal1-v0" and overrides["denoiser_hidden"] == [256, 256, 256]
    assert "alpha" not in overrides  # the safefql section's


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="not found"):
        load_overrides(str(tmp_path / "none.yaml"), "safefql")


@pytest.mark.parametrize("key, value, message", [
    ("schedule", "staged", "schedule must be"),
    ("safety_backup", "fisac", "safety_backup must be"),
    ("actor_loss", "penalty", "actor_loss must be"),
])
def test_closed_choices_are_validated(key, value, message):
    with pytest.raises(ValueError, match=message):
        SafeFQLConfig.from_dict({key: value})


def test_a_variant_reads_its_learners_section_less_the_keys_that_define_it():
    from safefql_core.training import resolve_config
    goal = str(CONFIG / "SafetyPointGoal1-v0.yaml")
    task, overrides = load_overrides(goal, "safefql-nodistill")
    assert "alpha" not in overrides and overrides["n_step"] == 1
    assert resolve_config("safefql-nodistill", overrides)["alpha"] == 0.0  # no clash with the YAML's alpha


@pytest.mark.parametrize("task", ["SafetyPointCircle1-v0", "SafetyPointGoal1-v0", "SafetyHalfCheetahVelocity-v1"])
def test_task_configs_are_found_by_task_and_hold_valid_keys(task):
    for algo, cls in SECTIONS.items():
        got_task, overrides = load_overrides(None, algo, task)
        assert got_task == task and (overrides or algo == "bc")
        cls.from_dict(overrides)  # unknown keys or bad values raise
    with pytest.raises(RunError, match="contradicts"):
        load_overrides(str(BOAT_YAML), "safefql", task)
