"""Export a trained learner to a policy bundle (safefql_core.bundle describes the format).

The torch half of the bundle: the graph modules traced to ONNX, the stored parity examples,
the weights for the torch debug backend. Kept apart from `safefql_core.bundle` so that
loading and running a bundle (the node, replay) never imports torch (docs/BENCHMARKS.md,
"Torch-free bundle loading").
"""
from __future__ import annotations

import io
import json
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from safefql_core.bundle import (
    BUNDLE_JSON,
    GRAPHS,
    GRAPHS_BY_ALGO,
    SCHEMA_VERSION,
    WEIGHTS,
    BundleError,
    GraphSpec,
    check_parity,
    ort_session,
    sha256,
)
from safefql_core.decision import DecisionSettings
from safefql_core.folding import fold

# The runtime's trusted observation range: the training data's [min, max] per value, widened by
# this fraction of its span on each side (docs/DESIGN.md, "Failure behaviour"). Half the span
# keeps every state a robot near its training region can reach, and refuses the absurd ones
# (1e30, a unit mix-up, a sensor's error code) that a network would extrapolate to anything.
OBS_RANGE_MARGIN = 0.5
EXAMPLES = 8


# ---- the exported graphs -------------------------------------------------------------------
# ---- the exported graphs -------------------------------------------------------------------
class ActorGraph(nn.Module):
    """(observation, noise) -> action = clip(mu(normalise(s), z))."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.normalizer, self.actor = learner.normalizer, learner.actor

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.actor(self.normalizer(observation), noise).clamp(-1.0, 1.0)


class SafetyGraph(nn.Module):
    """(observation, action) -> (pessimistic Q_safe = max over the ensemble, V_safe)."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.normalizer, self.qc, self.vc = learner.normalizer, learner.qc, learner.vc

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.normalizer(observation)
        return self.qc.pessimistic(o, action), self.vc(o)


class PolicyGraph(nn.Module):
    """(observation, noise) -> (action, Q_safe, V_safe) in one graph: the nominal decision is
    one onnxruntime call instead of two (per-call overhead dominates at batch 1), and a
    batch of noises scores all actor candidates of an intervention in one call too."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.actor, self.safety = ActorGraph(learner), SafetyGraph(learner)

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        action = self.actor(observation, noise)
        return (action, *self.safety(observation, action))


class ProposalsGraph(nn.Module):
    """(observation, noise) -> (action, Q_reward, Q_safe, V_safe) for a batch of actor noises:
    what the runtime needs to keep the proposal of highest conservative reward value
    (min over the ensemble) among those that pass the safety check (RuntimeConfig.proposals).
    A graph of its own, so the nominal path of a single proposal carries no reward critic."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.policy, self.normalizer, self.q = PolicyGraph(learner), learner.normalizer, learner.q

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        action, q_safe, v_safe = self.policy(observation, noise)
        return action, self.q.conservative(self.normalizer(observation), action), q_safe, v_safe


class DenoiserGraph(nn.Module):
    """FISOR: (observation, x_t, t) -> predicted noise; the sampler loop runs outside."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.normalizer, self.denoiser = learner.normalizer, learner.denoiser

    def forward(self, observation: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.denoiser(self.normalizer(observation), x, t)



NETWORKS_BY_ALGO = {"safefql": ("actor", "q", "qc", "vc"), "fisor": ("denoiser", "qc", "vc")}  # what the graphs use
GRAPH_MODULES = {"actor": ActorGraph, "safety": SafetyGraph, "policy": PolicyGraph, "proposals": ProposalsGraph,
                 "denoiser": DenoiserGraph}


def graph_modules(learner: nn.Module, algo: str) -> dict[str, nn.Module]:
    if algo not in GRAPHS_BY_ALGO:
        raise BundleError(f"algorithm '{algo}' has no deployable bundle; export a safefql or fisor run")
    return {name: GRAPH_MODULES[name](learner).eval() for name in GRAPHS_BY_ALGO[algo]}


def example_inputs(name: str, obs: np.ndarray, act_dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(obs)
    draw = lambda *shape: np.asarray(rng.standard_normal(shape), dtype=np.float32)  # noqa: E731
    if name in ("actor", "policy", "proposals"):
        return {"observation": obs, "noise": draw(n, act_dim)}
    if name == "safety":
        return {"observation": obs, "action": np.clip(draw(n, act_dim), -1, 1)}
    return {"observation": obs, "x": draw(n, act_dim), "t": np.asarray(rng.uniform(0, 1, (n, 1)), dtype=np.float32)}



# ---- export --------------------------------------------------------------------------------
def onnx_bytes(module: nn.Module, inputs: dict[str, np.ndarray], spec: GraphSpec) -> bytes:
    buf = io.BytesIO()
    args = tuple(torch.as_tensor(v) for v in inputs.values())
    dynamic = {n: {0: "batch"} for n in (*spec.inputs, *spec.outputs)}
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact and fast
        warnings.simplefilter("ignore")
        # torch's annotation names paths only; the exporter writes to any file object
        torch.onnx.export(module, args, buf, input_names=list(spec.inputs),  # type: ignore[arg-type]
                          output_names=list(spec.outputs), dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return buf.getvalue()



def export_bundle(learner: nn.Module, meta: dict[str, Any], out: Path, observations: np.ndarray,
                  calibration: dict[str, Any] | None, task: dict[str, Any],
                  decision: DecisionSettings) -> dict[str, Any]:
    """Write the bundle for a trained learner; return bundle.json's content.

    `observations` are typical inputs; EXAMPLES of them become the stored parity examples.
    `decision` is the deployed decision's settings; `calibration` records the one its δ* was
    calibrated on (its `decision` entry).
    """
    out.mkdir(parents=True, exist_ok=True)
    learner = learner.cpu().eval()
    rng = np.random.default_rng(0)
    obs = observations[rng.choice(len(observations), EXAMPLES, replace=False)].astype(np.float32)
    files, examples, parity = {}, {}, {}
    # The examples come from the learner as trained; the graphs from its folded form, so the
    # parity check below also proves the folding exact.
    modules = graph_modules(learner, meta["algo"])
    folded = graph_modules(fold(learner, NETWORKS_BY_ALGO[meta["algo"]]), meta["algo"])
    for name, module in modules.items():
        spec = GRAPHS[name]
        inputs = example_inputs(name, obs, meta["act_dim"], rng)
        with torch.no_grad():
            outputs = module(*(torch.as_tensor(v) for v in inputs.values()))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        examples[name] = {"inputs": {k: v.tolist() for k, v in inputs.items()},
                          "outputs": [o.numpy().tolist() for o in outputs]}
        model = onnx_bytes(folded[name], inputs, spec)
        (out / spec.file).write_bytes(model)
        parity[name] = check_parity(ort_session(model), examples[name], name)
        files[spec.file] = sha256(out / spec.file)
    torch.save(learner.state_dict(), out / WEIGHTS)
    files[WEIGHTS] = sha256(out / WEIGHTS)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "algo": meta["algo"],
        "obs_dim": meta["obs_dim"],
        "act_dim": meta["act_dim"],
        "task": task,
        "observation_normalisation": {"mean": meta["obs_mean"], "std": meta["obs_std"]},
        "action_scaling": {"low": task.get("action_low", [-1.0] * meta["act_dim"]),
                           "high": task.get("action_high", [1.0] * meta["act_dim"])},
        "control_period": task.get("control_period"),
        "observation_range": observation_range(meta["obs_min"], meta["obs_max"]),
        "margin_range": meta["margin_range"],
        "decision": decision.to_dict(),
        "calibration": calibration,
        "graphs": {name: {"file": GRAPHS[name].file, "inputs": list(GRAPHS[name].inputs),
                          "outputs": list(GRAPHS[name].outputs)} for name in examples},
        "examples": examples,
        "export_parity_max_rel_diff": parity,
        "files": files,
        "dataset_fingerprint": meta["dataset_fingerprint"],
        "training": {"seed": meta["seed"], "steps": meta["trained_steps"], "config": meta["config"]},
        "versions": _versions(),
    }
    (out / BUNDLE_JSON).write_text(json.dumps(doc, indent=1))
    (out / "MODEL_CARD.md").write_text(model_card(doc))
    return doc


def observation_range(trained_min: list[float], trained_max: list[float]) -> dict[str, Any]:
    """The trained range widened by OBS_RANGE_MARGIN of its span (at least 1e-3 of the values'
    size, so a feature constant in training gets a sliver), as float32 values: the runtime
    compares float32 states, so a bound is then exact."""
    lo, hi = np.asarray(trained_min, np.float64), np.asarray(trained_max, np.float64)
    pad = OBS_RANGE_MARGIN * np.maximum(hi - lo, 1e-3 * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi))))
    as_f32 = lambda a: a.astype(np.float32).astype(np.float64).tolist()  # noqa: E731
    return {"low": as_f32(lo - pad), "high": as_f32(hi + pad), "trained_min": list(trained_min),
            "trained_max": list(trained_max), "margin": OBS_RANGE_MARGIN}


def _box(box: dict[str, Any]) -> str:
    """The trusted observation range for the model card: the intervals, or where they are."""
    if len(box["low"]) > 4:
        return f"bundle.json's observation_range ({len(box['low'])} intervals)"
    return " × ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(box["low"], box["high"]))


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def model_card(doc: dict[str, Any]) -> str:
    cal = doc["calibration"]
    cal_text = ("not calibrated: the run-time threshold is 0 (the paper's gate); run "
                "offline_train.calibrate before export" if cal is None else
                f"δ* = {cal['delta']:.4f} ({cal['method']}, ε = {cal['epsilon']}, n = {cal['n']}, "
                f"source: {cal['source']}); coverage on a second held-out set: {cal['coverage']:.3f}")
    certifies = ("" if cal is None else " It certifies " + (
        "the raw z = 0 actor, not the deployed decision: recalibrate" if cal.get("decision") is None else
        "the decision below" if cal["decision"] == doc["decision"] else "ANOTHER decision than the one below"))
    decision = DecisionSettings.from_dict(doc["decision"], doc["act_dim"]).describe()
    repeat = doc["task"].get("action_repeat", 1)
    repeat_text = (f" **Acts every {repeat} steps** (trained on `collect --action-repeat {repeat}` data: "
                   "hold each action for that many steps)." if repeat > 1 else "")
    return f"""# Model card — {doc['task'].get('name', 'task')} / {doc['algo']}

- **What it does:** maps an observation ({doc['obs_dim']} values) to an action ({doc['act_dim']} values
  in [-1, 1]); `safety.onnx` scores (observation, action) with a pessimistic learned
  Hamilton–Jacobi safety value — Q_safe < 0 means predicted safe now and later.
- **Control period:** {doc['control_period']} s. **Trained:** {doc['training']['steps']} steps, seed
  {doc['training']['seed']}, on dataset {doc['dataset_fingerprint']}.{repeat_text}
- **Safety threshold:** {cal_text}.{certifies}
- **Decision:** {decision} (bundle.json's `decision`; the node, evaluate and replay use it).
- **Intended use:** the per-tick decision of `safefql_core.runtime` — actor proposal, calibrated
  check, fallback candidates, stop action on untrusted input. Not a certificate outside the
  state distribution of the training data: states outside {_box(doc['observation_range'])} (the
  training range widened by {doc['observation_range']['margin']:g} of its span) are rejected by default.
- **Files:** {', '.join(sorted(doc['files']))} (sha256 in bundle.json); versions {doc['versions']}.
"""
