"""The stacked critics (one ensemble for Q_r and Q_c, one for V and V_c) compute what separate
networks would: losses and gradients against a reference written here member by member, the
export views, and checkpoints of the earlier separate-module layout."""
import pytest
import torch
import torch.nn.functional as F

from safefql_core.agent import SafeFQL, SafeFQLConfig
from safefql_core.critics import is_old_layout
from safefql_core.data import TensorBatches, load_dataset
from safefql_core.training import RunError, TrainOptions, train

CFG = dict(critic_hidden=[8, 8], flow_hidden=[8, 8], batch_size=16, flow_steps=3, n_step=1)


def _learner(seed=0, **extra):
    torch.manual_seed(seed)
    return SafeFQL(2, 2, SafeFQLConfig(**{**CFG, **extra}), torch.tensor([0.1, -0.2]), torch.tensor([1.5, 0.8]))


def _batch(tiny_boat_h5, horizon=1):
    return TensorBatches(load_dataset(tiny_boat_h5), torch.device("cpu"), 0, horizon=horizon).sample(16)


# ---- the reference: each network on its own, plain matmuls, the losses written out -----------
def _member(mlp, j, x, activation=F.relu):
    """Member j of an ensemble MLP, layer by layer with its own weight slice."""
    linears = [m for m in mlp.net if hasattr(m, "weight")]
    for i, layer in enumerate(linears):
        x = x @ layer.weight[j] + layer.bias[j, 0]
        if i < len(linears) - 1:
            x = activation(x)
    return x.squeeze(-1)


def _dense(mlp, x, frozen=False):
    """A plain nn.Linear MLP (teacher, actor) with GELU, optionally through detached weights."""
    linears = [m for m in mlp.net if hasattr(m, "weight")]
    for i, layer in enumerate(linears):
        w, b = (layer.weight.detach(), layer.bias.detach()) if frozen else (layer.weight, layer.bias)
        x = x @ w.T + b
        if i < len(linears) - 1:
            x = F.gelu(x)
    return x


def _expectile(u, tau):
    return (torch.where(u < 0, 1 - tau, tau) * u * u).mean()


def _reference_critic_losses(learner, b):
    cfg, m = learner.cfg, learner.cfg.critic_members
    norm = lambda o: (o - learner.normalizer.mean) / learner.normalizer.std  # noqa: E731
    obs, nxt = norm(b["observations"]), norm(b["next_observations"])
    sa = torch.cat([obs, b["actions"]], -1)
    q = [_member(learner.q_all.mlp, j, sa) for j in range(2 * m)]
    with torch.no_grad():
        q_bar = [_member(learner.q_all_target.mlp, j, sa) for j in range(2 * m)]
        next_v, next_vc = (_member(learner.v_all.mlp, j, nxt) for j in range(2))
        y = b["rewards"] + cfg.gamma * b["masks"] * next_v
        g = cfg.safety_gamma
        yc = b["masks"] * ((1 - g) * b["margins"] + g * torch.maximum(b["margins"], next_vc)) \
            + (1 - b["masks"]) * b["margins"]
    v, vc = (_member(learner.v_all.mlp, j, obs) for j in range(2))
    return {
        "loss_v": _expectile(torch.minimum(q_bar[0], q_bar[1]) - v, cfg.expectile),
        "loss_q": sum(((q[j] - y) ** 2).mean() for j in range(m)),
        "loss_vc": _expectile(torch.maximum(q_bar[2], q_bar[3]) - vc, 1 - cfg.safety_expectile),
        "loss_qc": sum(((q[m + j] - yc) ** 2).mean() for j in range(m)),
    }


def _reference_actor_loss(learner, obs, noise):
    cfg, m = learner.cfg, learner.cfg.critic_members
    with torch.no_grad():
        x = noise
        for i in range(cfg.flow_steps):
            t = torch.full((obs.shape[0], 1), i / cfg.flow_steps)
            x = x + _dense(learner.teacher.mlp, torch.cat([obs, x, t], -1)) / cfg.flow_steps
        target = x.clamp(-1, 1)
    mu = _dense(learner.actor.mlp, torch.cat([obs, noise], -1))
    distill = ((mu - target) ** 2).sum(-1).mean()
    sa = torch.cat([obs, mu.clamp(-1, 1)], -1)
    frozen = [(layer.weight.detach(), layer.bias.detach())
              for layer in learner.q_all.mlp.net if hasattr(layer, "weight")]
    qs = []
    for j in range(2 * m):
        h = sa
        for i, (w, b) in enumerate(frozen):
            h = h @ w[j] + b[j, 0]
            h = F.relu(h) if i < len(frozen) - 1 else h
        qs.append(h.squeeze(-1))
    q_r, q_c = torch.minimum(qs[0], qs[1]), torch.maximum(qs[2], qs[3])
    feasible = (q_c < cfg.gate_threshold).float()
    reward = -q_r / q_r.abs().mean().detach()
    safety = cfg.safety_weight * torch.relu(q_c - cfg.gate_threshold)
    return cfg.alpha * distill + (feasible * reward + (1 - feasible) * safety).mean()


# ---- the tests ----------------------------------------------------------------------------------
def test_stacked_critic_losses_and_gradients_match_separate_networks(tiny_boat_h5):
    learner = _learner()
    with torch.no_grad():  # targets apart from the online critics, as after training
        for p in learner.q_all_target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = _batch(tiny_boat_h5)
    obs = learner.normalizer(b["observations"])
    got = learner.critic_losses(b, obs, learner.normalizer(b["next_observations"]))
    want = _reference_critic_losses(learner, b)
    params = [learner.q_all.mlp.net[0].weight, learner.q_all.mlp.net[-1].bias, learner.v_all.mlp.net[2].weight]
    for key in want:
        assert torch.allclose(got[key], want[key], rtol=1e-5, atol=1e-6), key
        for g, w in zip(torch.autograd.grad(got[key], params, retain_graph=True, allow_unused=True),
                        torch.autograd.grad(want[key], params, retain_graph=True, allow_unused=True)):
            assert (g is None and w is None) or torch.allclose(g, w, rtol=1e-4, atol=1e-6), key


def test_actor_loss_matches_reference_and_moves_only_the_actor(tiny_boat_h5):
    learner = _learner(1)
    obs = learner.normalizer(_batch(tiny_boat_h5)["observations"])
    torch.manual_seed(7)
    got = learner.actor_loss(obs)["loss_actor"]
    torch.manual_seed(7)
    want = _reference_actor_loss(learner, obs, torch.randn(obs.shape[0], 2))
    assert torch.allclose(got, want, rtol=1e-5)
    actor = list(learner.actor.parameters())
    for g, w in zip(torch.autograd.grad(got, actor, retain_graph=True), torch.autograd.grad(want, actor)):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-7)
    got.backward()
    assert all(p.grad is None for p in [*learner.q_all.parameters(), *learner.teacher.parameters()])


def test_views_are_the_stacked_members_and_follow_training(tiny_boat_h5):
    learner = _learner()
    b = _batch(tiny_boat_h5)
    obs, act = learner.normalizer(b["observations"]), b["actions"]
    learner.update(b, 0)  # one optimizer step: the views must see the new weights
    with torch.no_grad():
        q_all, v_all = learner.q_all(obs, act), learner.v_all(obs)
        assert torch.allclose(learner.q(obs, act), q_all[:2], atol=1e-6)
        assert torch.allclose(learner.qc(obs, act), q_all[2:], atol=1e-6)
        assert torch.allclose(learner.v(obs), v_all[0], atol=1e-6)
        assert torch.allclose(learner.vc(obs), v_all[1], atol=1e-6)
    assert not any(p.requires_grad for p in learner.qc.parameters())


def _old_layout(learner):
    """The learner's weights as the separate-module layout of earlier checkpoints wrote them."""
    state, out = learner.state_dict(), {}
    for key, value in state.items():
        name, _, rest = key.partition(".")
        if name in ("q_all", "q_all_target"):
            old = ("q", "qc") if name == "q_all" else ("q_target", "qc_target")
            if value.dim() == 4:  # layer norm per group -> nn.LayerNorm [dim] each
                out[f"{old[0]}.{rest}"], out[f"{old[1]}.{rest}"] = value[0, 0, 0], value[1, 0, 0]
            else:
                out[f"{old[0]}.{rest}"], out[f"{old[1]}.{rest}"] = value[:2], value[2:]
        elif name == "v_all":
            for i, old in enumerate(("v", "vc")):
                out[f"{old}.{rest}"] = value[i, 0, 0] if value.dim() == 4 else \
                    value[i].T if rest.endswith("weight") else value[i, 0]
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("layer_norm", [False, True])
def test_old_layout_weights_load_into_the_stacked_layout(layer_norm):
    trained = _learner(0, critic_layer_norm=layer_norm)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))  # layer norm weights away from their ones/zeros init
    old = _old_layout(trained)
    assert is_old_layout(old) and "q.mlp.net.0.weight" in old and "v.mlp.net.0.weight" in old
    fresh = _learner(5, critic_layer_norm=layer_norm)
    fresh.load_state_dict(old)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_old_layout_checkpoint_refuses_to_resume_with_a_clear_error(tiny_boat_h5, tmp_path):
    cfg = {**CFG, "n_step": 10, "steps": 10}
    run = train(TrainOptions(data=tiny_boat_h5, out=str(tmp_path / "r"), overrides=cfg, progress=False))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    learner = _learner()
    learner.load_state_dict(ckpt["model"])
    ckpt["model"] = _old_layout(learner)
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(RunError, match="before the critics were stacked.*train again with a new --out"):
        train(TrainOptions(data=tiny_boat_h5, out=str(run), overrides={**cfg, "steps": 20}, progress=False))
    from safefql_core.training import load_run
    loaded, _ = load_run(run)  # evaluation and export still read it
    assert torch.equal(loaded.q_all.mlp.net[0].weight, learner.q_all.mlp.net[0].weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; this machine has none")
def test_cuda_graph_update_matches_eager_and_trains():
    from safefql_core.bc import BC, BCConfig
    from safefql_core.cuda_graph import GraphedUpdate
    torch.manual_seed(0)
    batches = [{"observations": torch.randn(32, 2, device="cuda"),
                "actions": torch.rand(32, 2, device="cuda") * 2 - 1} for _ in range(5)]
    # BC has no random draws: graphed and eager must train the same weights.
    learners = []
    for graphed in (False, True):
        torch.manual_seed(1)
        bc = BC(2, 2, BCConfig(hidden=[16, 16]), torch.zeros(2), torch.ones(2)).cuda()
        update = GraphedUpdate(bc) if graphed else bc.update
        losses = [float(update(b, s)["loss_bc"]) for s, b in enumerate(batches)]
        learners.append((bc, losses))
    (eager, eager_losses), (graph, graph_losses) = learners
    assert eager_losses == pytest.approx(graph_losses, rel=1e-4)
    for a, b in zip(eager.parameters(), graph.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    # SafeFQL (random draws inside the graph): replays train, and metrics stay finite.
    learner = _learner().cuda()
    update, before = GraphedUpdate(learner), learner.actor.mlp.net[0].weight.clone()
    batch = {"observations": torch.randn(16, 2, device="cuda"), "next_observations": torch.randn(16, 2, device="cuda"),
             "actions": torch.rand(16, 2, device="cuda") * 2 - 1, "rewards": torch.randn(16, device="cuda"),
             "margins": torch.randn(16, device="cuda"), "masks": torch.ones(16, device="cuda")}
    metrics = [update(batch, step) for step in range(3)][-1]
    assert all(torch.isfinite(v) for v in metrics.values())
    assert not torch.equal(before, learner.actor.mlp.net[0].weight)
