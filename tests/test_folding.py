"""The folded (export) form of the networks computes what the trained learner computes."""
import torch

from safefql_core.bundle import NETWORKS_BY_ALGO, graph_modules
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
