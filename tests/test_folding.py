"""The folded (export) form of the networks computes what the trained learner computes."""
import torch

from safefql_core.bundle_export import NETWORKS_BY_ALGO, graph_modules
from safefql_core.folding import fold
from safefql_core.training import build_learner, resolve_config


def _learner(algo, **overrides):
    torch.manual_seed(0)
    cfg = resolve_config(algo, {"critic_hidden": [16, 8], "critic_members": 3, **overrides})
    mean, std = torch.tensor([0.5, -1.0]).numpy(), torch.tensor([2.0, 0.25]).numpy()
    return build_learner(algo, cfg, 2, 2, mean, std).eval()


def _inputs(name, n=64):
    g = torch.Generator().manual_seed(1)
    obs, other = torch.randn(n, 2, generator=g) * 3, torch.randn(n, 2, generator=g)
    return (obs, other, torch.rand(n, 1, generator=g)) if name == "denoiser" else (obs, other)


def test_folded_graphs_match_the_learner():
    for algo, extra in (("safefql", {"flow_hidden": [16, 16, 16]}), ("fisor", {"denoiser_hidden": [16, 16]})):
        learner = _learner(algo, **extra)
        folded = fold(learner, NETWORKS_BY_ALGO[algo])
        assert folded is not learner and isinstance(folded.normalizer, torch.nn.Identity)
        reference, dense = graph_modules(learner, algo), graph_modules(folded, algo)
        for name, module in reference.items():
            with torch.no_grad():
                want, got = module(*_inputs(name)), dense[name](*_inputs(name))
            want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
            for w, g in zip(want, got):
                assert w.shape == g.shape
                assert (w - g).abs().max() <= 1e-5, (algo, name)


def test_ensemble_folds_to_one_dense_net_with_member_columns():
    learner = _learner("safefql")
    folded = fold(learner, ("qc",))
    obs, act = _inputs("safety")
    with torch.no_grad():
        assert (folded.qc(obs, act) - learner.qc(learner.normalizer(obs), act)).abs().max() <= 1e-5
    assert [lin.out_features for lin in folded.qc.linears] == [48, 24, 3]  # 3 members side by side


def test_layer_norm_nets_are_exported_as_trained():
    learner = _learner("safefql", critic_layer_norm=True)
    assert fold(learner, NETWORKS_BY_ALGO["safefql"]) is learner


def test_ill_conditioned_normalisation_stays_unfolded_and_exact():
    # an accelerometer's gravity axis: mean 9.8, std 0.03 -> |mean| / std ~ 300
    torch.manual_seed(0)
    cfg = resolve_config("safefql", {"critic_hidden": [64, 64], "flow_hidden": [64, 64]})
    learner = build_learner("safefql", cfg, 2, 2, torch.tensor([9.8, 0.0]).numpy(),
                            torch.tensor([0.03, 1.0]).numpy()).eval()
    folded = fold(learner, NETWORKS_BY_ALGO["safefql"])
    assert folded.normalizer is learner.normalizer            # kept as (x - mean) / std
    obs = torch.tensor([9.8, 0.0]) + torch.randn(64, 2) * torch.tensor([0.03, 1.0])
    act = torch.rand(64, 2) * 2 - 1
    with torch.no_grad():
        want = learner.qc(learner.normalizer(obs), act).max(0).values
        got = folded.qc.pessimistic(folded.normalizer(obs), act)
    assert (want - got).abs().max() <= 1e-5                   # the ensemble is still one dense net
