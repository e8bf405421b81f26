"""config/boat.yaml is the documented form of the built-in defaults; they must not drift."""
from pathlib import Path

import pytest
import yaml

from offline_train.fit import load_overrides
from safefql_core.agent import SafeFQLConfig
from safefql_core.bc import BCConfig
from safefql_core.training import RunError

BOAT_YAML = Path(__file__).resolve().parents[1] / "config" / "boat.yaml"


def test_boat_yaml_equals_defaults():
    doc = yaml.safe_load(BOAT_YAML.read_text())
    assert doc["task"] == "boat"
    assert SafeFQLConfig.from_dict(doc["safefql"]) == SafeFQLConfig()
    assert BCConfig.from_dict(doc["bc"]) == BCConfig()


def test_load_overrides_picks_the_algo_section():
    task, overrides = load_overrides(str(BOAT_YAML), "bc")
    assert task == "boat" and overrides == BCConfig().to_dict()


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
    task, overrides = load_overrides(str(BOAT_YAML), "safefql-nodistill")
    assert "alpha" not in overrides and overrides["n_step"] == 10
    assert resolve_config("safefql-nodistill", overrides)["alpha"] == 0.0  # no clash with the YAML's alpha


@pytest.mark.parametrize("task", ["SafetyPointCircle1-v0", "SafetyPointGoal1-v0", "SafetyHalfCheetahVelocity-v1"])
def test_task_configs_are_found_by_task_and_hold_valid_keys(task):
    from safefql_core.fisor import FISORConfig
    for algo, cls in (("safefql", SafeFQLConfig), ("bc", BCConfig), ("fisor", FISORConfig)):
        got_task, overrides = load_overrides(None, algo, task)
        assert got_task == task and overrides
        cls.from_dict(overrides)  # unknown keys or bad values raise
    with pytest.raises(RunError, match="contradicts"):
        load_overrides(str(BOAT_YAML), "safefql", task)
