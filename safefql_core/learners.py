"""What a learner is to the rest of the project, and what each one can do, said once.

`fit`, `calibrate`, `export`, `evaluate`, `benchmark` and the runtime ask a learner's
capabilities ("has it a safety critic?", "which graphs make its bundle?", "can it rank
several proposals?") instead of comparing its name with "bc" or "safefql", so a new learner
is one entry here and one in the `--algo` registry (safefql_core.training.ALGOS), not a hunt
for string checks. Keyed by the plain learner name, which runs and bundles record as their
`algo` (a variant such as `safefql-nodistill` is its learner's: training.learner_name).

No torch here: the deployed runtime reads the capabilities of the bundle it loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class Learner(Protocol):
    """What training, evaluation and export call on every learner (each is an nn.Module)."""

    cfg: Any           # its config dataclass (agent.SafeFQLConfig, ...)
    obs_dim: int       # the widths of its observations and actions
    act_dim: int
    optimizer: Any     # one Adam over all its networks: one step per update

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One gradient step on a batch; its losses as tensors, read only when logged."""
        ...

    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Actions at raw observations (noise None: the deterministic action)."""
        ...


class SafetyLearner(Learner, Protocol):
    """A learner with a safety critic (`Capabilities.safety_critic`): what calibration scores."""

    def safety(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pessimistic Q_safe, V_safe) at raw observations."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What one learner offers beyond acting."""

    safety_critic: bool           # Q_safe / V_safe: δ* can be calibrated, the decision checked
    graphs: tuple[str, ...] = ()  # its bundle's ONNX graphs (safefql_core.bundle.GRAPHS); none: no bundle
    proposer: str | None = None   # what proposes the deployed action: "actor" (one call of the policy
                                  # graph) or "denoiser" (the DDPM chain, safefql_core.ddpm); None: no bundle
    proposals: bool = False       # a reward critic ranks several actor proposals per tick

    @property
    def deployable(self) -> bool:
        """Exported as a bundle the runtime (and the robot's node) runs."""
        return bool(self.graphs)


CAPABILITIES: dict[str, Capabilities] = {
    "safefql": Capabilities(safety_critic=True, graphs=("actor", "safety", "policy", "proposals"), proposer="actor",
                            proposals=True),
    "fisor": Capabilities(safety_critic=True, graphs=("denoiser", "safety"), proposer="denoiser"),
    # No bundle: neither proposer runs its flow sampler and choice (safefql_core/safeifql.py).
    "safeifql": Capabilities(safety_critic=True),
    "bc": Capabilities(safety_critic=False),
}
