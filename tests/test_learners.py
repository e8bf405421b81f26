"""Each learner's capabilities (safefql_core.learners) say what the learner really has: the
commands and the runtime act on them instead of on its name, so a wrong entry would
calibrate a learner without a safety critic, or export graphs it cannot build."""
import pytest
import torch

from safefql_core.bundle import GRAPHS
from safefql_core.bundle_export import graph_modules
from safefql_core.learners import CAPABILITIES, Learner
from safefql_core.training import ALGOS, build_learner, learner_name, resolve_config


def test_every_algorithm_is_a_learner_with_capabilities():
    assert {learner_name(name) for name in ALGOS} == set(CAPABILITIES)


def _learner(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = resolve_config(name, {"critic_hidden": [8], "critic_members": 2} if name != "bc" else {})
    return build_learner(name, cfg, 2, 2, torch.zeros(2).numpy(), torch.ones(2).numpy()).eval()


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
def test_capabilities_match_the_learner(name):
    can, learner = CAPABILITIES[name], _learner(name)
    members = {attr for attr in dir(Learner) if not attr.startswith("_")} | set(Learner.__annotations__)
    assert all(hasattr(learner, attr) for attr in members), members
    assert hasattr(learner, "safety") == can.safety_critic
    if can.safety_critic:
        obs = torch.randn(5, 2)
        q_safe, v_safe = learner.safety(obs, learner.act(obs))
        assert q_safe.shape[0] == v_safe.shape[0] == 5
    assert set(can.graphs) <= set(GRAPHS)
    assert (can.proposer is None) == (not can.deployable)
    assert can.proposer is None or can.proposer in can.graphs
    assert not can.proposals or "proposals" in can.graphs
    if can.deployable:   # the export builds exactly these graphs from the learner
        assert sorted(graph_modules(learner, name)) == sorted(can.graphs)
