"""Safety Gymnasium tasks behind one small adapter, and the import shim they need.

Why a shim: safety-gymnasium 1.0.0 declares dataclass fields such as `color: np.array =
COLOR['goal']`. Python 3.11's dataclasses refuse unhashable defaults, so a plain
`import safety_gymnasium` dies with "mutable default <class 'numpy.ndarray'> for field
color". `import_safety_gymnasium()` imports the package while `dataclasses._process_class`
is wrapped to turn every numpy-array class default into a `default_factory` that returns a
copy (each instance gets its own array, which is what the authors meant), then restores
the original. Nothing in site-packages is edited and nothing outside that import window is
affected.

Why an adapter: `SafetyGymEnv` gives every task the interface the offline tooling uses
(`reset(seed) -> obs`, `step(action) -> (obs, reward, cost, terminated, truncated, info)`,
`obs_dim`, `act_dim`, action bounds). The safety margin l of SAFEFQL.md comes in two
kinds. `margin_from_cost` maps a 0/1 cost to +cost_scale / -1, all a DSRL file allows.
Where the simulator's geometry defines the cost (hazard discs, Circle's walls), the
adapter also reports the signed distance to the failure set, `info["margin"]` (> 0
exactly when the cost is): the continuous margin the boat has, which tells the safety
critic how close a state is to failing instead of only whether it failed
(docs/DESIGN.md, "Distance margins for Safety Gymnasium").

Why resets compile without the skybox: a navigation task rebuilds its MuJoCo model from
XML at every reset (each episode has a new layout), and that XML names a skybox of six
high-resolution PNGs (24 MB) that MuJoCo decodes on every compile: ~2.7 s of a reset that
otherwise takes ~0.01 s, more than the 1000 steps of a Goal episode. The skybox is drawn
only when rendering, which the adapter never does; the same seed gives the same
observations, rewards, costs and margins without it (tests/test_safety_gym.py), so
`reset` compiles the layout with the skybox left out (`_skybox_free_compile`).

safety-gymnasium is optional: it is imported only when a Safety Gymnasium task is used.

    from safefql_core.envs.safety_gym import make_env
    env = make_env("SafetyPointGoal1-v0", seed=0)
    obs = env.reset(seed=0)
    obs, reward, cost, terminated, truncated, info = env.step(env.action_low * 0)
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import re
import sys
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

import numpy as np

from safefql_core.data import DEFAULT_COST_SCALE

INSTALL_HINT = (
    "install it into the venv with `pip install --no-deps safety-gymnasium==1.0.0` "
    "(plus gymnasium==0.28.1 mujoco==2.3.3 numpy==1.26.4; see ENVIRONMENT.md)"
)


def _array_defaults_as_factories(process_class: Callable[..., type]) -> Callable[..., type]:
    """Wrap dataclasses' class processor so numpy-array defaults become factories.

    `_process_class` is private but has been the single entry point of @dataclass from
    Python 3.7 to 3.13; the venv pins 3.11, and the test suite imports through this shim.
    """

    def process(cls: type, *args: Any, **kwargs: Any) -> type:
        for name in cls.__dict__.get("__annotations__", {}):
            value = cls.__dict__.get(name)
            if isinstance(value, np.ndarray):
                setattr(cls, name, dataclasses.field(default_factory=value.copy))
        return process_class(cls, *args, **kwargs)

    return process


def silence_adroit_notice() -> None:
    """Drop gymnasium-robotics' import-time notice about its AdroitHand rewards, before
    gymnasium is imported.

    `import gymnasium` loads gymnasium-robotics as a plugin, which prints (to stderr, twice,
    in every Safety Gymnasium command) a notice about AdroitHand tasks that nothing here
    uses. It prints whatever farama_notifications lists for its version, so removing that one
    entry silences it and nothing else.
    """
    try:
        from farama_notifications import notifications
    except ImportError:
        return
    notifications.pop("gymnasium_robotics", None)


def import_safety_gymnasium() -> ModuleType:
    """Import safety_gymnasium on Python 3.11; raise ImportError naming the fix if absent."""
    if "safety_gymnasium" in sys.modules:
        return sys.modules["safety_gymnasium"]
    if importlib.util.find_spec("safety_gymnasium") is None:
        raise ImportError(f"Safety Gymnasium tasks need the safety-gymnasium package; {INSTALL_HINT}")
    silence_adroit_notice()
    # the function @dataclass calls for every class: private, so untyped; patched on purpose
    original = dataclasses._process_class  # type: ignore[attr-defined]
    dataclasses._process_class = _array_defaults_as_factories(original)  # type: ignore[attr-defined]
    try:
        return importlib.import_module("safety_gymnasium")
    finally:
        dataclasses._process_class = original  # type: ignore[attr-defined]


SKYBOX = re.compile(r'<texture[^>]*type="skybox"[^>]*(?:/>|>\s*</texture>)')


class _SkyboxFreeMujoco:
    """The `mujoco` module as safety_gymnasium.world sees it, except that models are
    compiled from XML with the (render-only) skybox texture removed."""

    def __init__(self, mujoco: ModuleType) -> None:
        self._mujoco = mujoco
        self.MjModel = SimpleNamespace(from_xml_string=lambda xml, *args, **kwargs:
                                       mujoco.MjModel.from_xml_string(SKYBOX.sub("", xml), *args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mujoco, name)


@contextlib.contextmanager
def _skybox_free_compile():
    """While active, the navigation tasks' world builds compile without the skybox."""
    world = importlib.import_module("safety_gymnasium.world")  # loaded with safety_gymnasium
    real = world.mujoco
    world.mujoco = _SkyboxFreeMujoco(real)
    try:
        yield
    finally:
        world.mujoco = real


def margin_from_cost(cost: np.ndarray | float, cost_scale: float = DEFAULT_COST_SCALE) -> np.ndarray:
    """SAFEFQL.md's margin for 0/1 costs: +cost_scale where cost > 0 (unsafe), else -1."""
    return np.where(np.asarray(cost) > 0, cost_scale, -1.0).astype(np.float32)


def _hazards_margin(hazards: Any, agent: Any) -> float:
    """Depth inside the nearest hazard disc: size - distance (the cost is 1 where it is > 0)."""
    return max(hazards.size - agent.dist_xy(pos) for pos in hazards.pos)


def _sigwalls_margin(walls: Any, agent: Any) -> float:
    """Distance beyond Circle's walls, |x| - locate_factor (and |y| with four walls)."""
    x, y = agent.pos[:2]
    outside = abs(x) - walls.locate_factor
    return max(outside, abs(y) - walls.locate_factor) if walls.num == 4 else outside


# Constrained obstacle classes whose cost is a sign test on a distance, by class name.
GEOMETRIC_MARGINS: dict[str, Callable[[Any, Any], float]] = {
    "Hazards": _hazards_margin,
    "Sigwalls": _sigwalls_margin,
}


class SafetyGymEnv:
    """One Safety Gymnasium task with flat float32 observations and 6-tuple steps.

    `max_episode_steps` shortens the task's own time limit (e.g. for tests); the episode
    then ends with truncated=True, as at the task's limit.
    """

    def __init__(self, task_id: str, seed: int, max_episode_steps: int | None = None) -> None:
        sg = import_safety_gymnasium()
        try:
            self.env = sg.make(task_id)
        except Exception as exc:  # gymnasium raises several types for unknown ids
            raise ValueError(
                f"unknown Safety Gymnasium task {task_id!r} ({exc}); use a registered id such as "
                "SafetyPointCircle1-v0 or SafetyPointGoal1-v0"
            ) from exc
        self.task_id = task_id
        self.seed = seed
        limits = [x for x in (self.env.spec.max_episode_steps if self.env.spec else None, max_episode_steps) if x]
        self.max_episode_steps = min(limits) if limits else None
        self.action_low = np.asarray(self.env.action_space.low, dtype=np.float32)
        self.action_high = np.asarray(self.env.action_space.high, dtype=np.float32)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self._steps = 0
        self._seeded = False
        self._margin_terms = self._geometric_margin_terms()

    def _geometric_margin_terms(self) -> list[tuple[Callable[[Any, Any], float], Any]] | None:
        """(margin function, obstacle) per constrained obstacle, or None when some cost
        has no geometric margin here (other obstacle kinds, contact costs, velocity limits)."""
        task: Any = getattr(self.env.unwrapped, "task", None)  # velocity tasks are plain MuJoCo envs
        if not hasattr(task, "_obstacles") or getattr(task, "static_geoms_contact_cost", None):
            return None
        constrained = [o for o in task._obstacles if getattr(o, "is_constrained", False)]
        if not constrained or any(type(o).__name__ not in GEOMETRIC_MARGINS for o in constrained):
            return None
        return [(GEOMETRIC_MARGINS[type(o).__name__], o) for o in constrained]

    @property
    def has_geometric_margin(self) -> bool:
        """Whether `step` reports the signed distance to the failure set in info["margin"]."""
        return self._margin_terms is not None

    @property
    def task(self) -> Any:
        """The underlying safety_gymnasium task (agent and object positions), for scripted policies."""
        return self.env.unwrapped.task

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode; the first reset without a seed uses the constructor's seed."""
        if seed is None and not self._seeded:
            seed = self.seed
        self._seeded = True
        with _skybox_free_compile():
            obs, _ = self.env.reset(seed=seed)
        self._steps = 0
        return np.asarray(obs, dtype=np.float32).reshape(-1)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float32), self.action_low, self.action_high)
        obs, reward, cost, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        if self.max_episode_steps is not None and self._steps >= self.max_episode_steps:
            truncated = True
        if self._margin_terms is not None:  # the post-step state, the one the cost was computed on
            info["margin"] = max(fn(obstacle, self.task.agent) for fn, obstacle in self._margin_terms)
        return (np.asarray(obs, dtype=np.float32).reshape(-1), float(reward), float(cost),
                bool(terminated), bool(truncated), info)

    def hold(self, action: np.ndarray, ticks: int) -> tuple[np.ndarray, float, float, bool, bool, dict, int]:
        """Apply one action for `ticks` steps, or until the episode ends: one decision of a
        controller acting every `ticks` steps (`action_repeat`, docs/DESIGN.md). Returns the
        last observation and flags, the summed reward and cost, info with the largest margin
        of the held steps (the failure set was touched if any step touched it), and the
        number of steps taken."""
        reward_sum, cost_sum, margin = 0.0, 0.0, -np.inf
        for taken in range(1, ticks + 1):
            obs, reward, cost, terminated, truncated, info = self.step(action)
            reward_sum, cost_sum = reward_sum + reward, cost_sum + cost
            if "margin" in info:
                margin = info["margin"] = max(margin, info["margin"])
            if terminated or truncated:
                break
        return obs, reward_sum, cost_sum, terminated, truncated, info, taken

    def close(self) -> None:
        self.env.close()


def make_env(task_id: str, seed: int, max_episode_steps: int | None = None) -> SafetyGymEnv:
    """A Safety Gymnasium task behind the adapter; `seed` is the first reset's default seed."""
    return SafetyGymEnv(task_id, seed, max_episode_steps)
