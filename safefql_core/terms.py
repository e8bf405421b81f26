"""Ready-made reward / safety-margin terms a roboticist expects, declared in the task YAML.

    terms:
      to_goal:   {kind: distance, position: [x, y], point: [2.0, 0.0]}
      obstacles: {kind: clearance, position: [x, y], shapes: [{disc: {center: [1, 0.5], radius: 0.3}},
                                                             {box: {center: [0, 2], size: [1, 0.4]}},
                                                             {polygon: [[3, 0], [4, 0], [4, 1]]}]}
      fence:     {kind: geofence, position: [x, y], polygon: [[-1, -1], [5, -1], [5, 3], [-1, 3]]}
      lidar:     {kind: lidar_clearance, ranges: scan, radius: 0.2}
      overspeed: {kind: speed_above, velocity: [vx, vy], limit: 0.5}
      joints:    {kind: joint_limits, positions: [shoulder, elbow], low: [-1.5, -2], high: [1.5, 2]}

Every term is an array [N] computed from the named features, so expressions use it by name:
`margin: "-min(obstacles, fence, lidar)"`. Signs follow one rule: `distance` and the three
clearances (`clearance`, `geofence`, `lidar_clearance`, `joint_limits`) are positive on the
safe side and negative past it; `speed_above` is positive above the limit. The margin
convention (l > 0 is unsafe) is then `-clearance` or `speed_above`.
Geometry is 2-D in the plane of `position` (boxes are axis-aligned).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class TermError(ValueError):
    """A term declaration that cannot be used; the message names the key and the fix."""


def _points(value: Any, where: str, min_count: int = 1) -> np.ndarray:
    try:
        pts = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TermError(f"{where} must be a list of [x, y] points, got {value!r}") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < min_count or not np.isfinite(pts).all():
        raise TermError(f"{where} must be a list of at least {min_count} finite [x, y] points, got {value!r}")
    return pts


def _vector(value: Any, where: str, size: int | None = None) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TermError(f"{where} must be a list of numbers, got {value!r}") from None
    if (size is not None and len(v) != size) or not len(v) or not np.isfinite(v).all():
        raise TermError(f"{where} must be {size or 'some'} finite number(s), got {value!r}")
    return v


def _number(value: Any, where: str, positive: bool = False) -> float:
    v = _vector(value, where, 1)[0]
    if positive and not v > 0:
        raise TermError(f"{where} must be positive, got {value!r}")
    return float(v)


# ---- signed distances in the plane: positive outside the shape, negative inside ----------
def disc_sdf(p: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    return np.linalg.norm(p - center, axis=-1) - radius


def box_sdf(p: np.ndarray, center: np.ndarray, size: np.ndarray) -> np.ndarray:
    q = np.abs(p - center) - size / 2.0
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


def polygon_sdf(p: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Distance to the nearest edge, negative inside (even-odd rule: any simple polygon)."""
    a, b = vertices, np.roll(vertices, -1, axis=0)          # edges a -> b  [E, 2]
    ab = b - a
    ap = p[:, None, :] - a[None]                              # [N, E, 2]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-300), 0.0, 1.0)
    dist = np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(axis=1)
    px, py = p[:, None, 0], p[:, None, 1]
    crosses = ((a[:, 1] > py) != (b[:, 1] > py)) & (
        px < a[:, 0] + (py - a[:, 1]) * (b[:, 0] - a[:, 0]) / np.where(b[:, 1] != a[:, 1], b[:, 1] - a[:, 1], 1.0))
    inside = crosses.sum(axis=1) % 2 == 1
    return np.where(inside, -dist, dist)


def shape_sdf(shape: Any, where: str):
    """One shape of a `clearance` / `geofence` term -> a function of points [N, 2]."""
    if not isinstance(shape, Mapping) or len(shape) != 1:
        raise TermError(f"{where} must be one of {{disc: {{center, radius}}}}, {{box: {{center, size}}}} or "
                        f"{{polygon: [[x, y], ...]}}, got {shape!r}")
    (kind, params), = shape.items()
    if kind == "disc" and isinstance(params, Mapping) and set(params) == {"center", "radius"}:
        c, r = _vector(params["center"], f"{where}.disc.center", 2), _number(params["radius"], f"{where}.disc.radius", True)
        return lambda p: disc_sdf(p, c, r)
    if kind == "box" and isinstance(params, Mapping) and set(params) == {"center", "size"}:
        c, s = _vector(params["center"], f"{where}.box.center", 2), _vector(params["size"], f"{where}.box.size", 2)
        if not (s > 0).all():
            raise TermError(f"{where}.box.size must be positive, got {params['size']!r}")
        return lambda p: box_sdf(p, c, s)
    if kind == "polygon":
        vertices = _points(params, f"{where}.polygon", 3)
        return lambda p: polygon_sdf(p, vertices)
    raise TermError(f"{where}: unknown shape {kind!r} or wrong keys {params!r}; use disc {{center, radius}}, "
                    "box {center, size} or polygon [[x, y], ...]")


# ---- the terms -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """A declared term: its YAML (kept for the spec's round trip), the feature names it reads,
    and the function of their values."""

    definition: dict[str, Any]
    inputs: tuple[str, ...]
    fn: Any

    def __call__(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.fn(*(np.asarray(values[n], dtype=np.float64) for n in self.inputs)), dtype=np.float64)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Term) and self.definition == other.definition

    def __hash__(self) -> int:
        return hash(repr(self.definition))


def _names(value: Any, where: str, count: int | None = None) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else ()
    if not names or not all(isinstance(n, str) for n in names) or (count is not None and len(names) != count):
        need = f"{count} feature name(s)" if count else "a feature name or a list of them"
        raise TermError(f"{where} must be {need}, got {value!r}")
    return names


def _stack(*columns: np.ndarray) -> np.ndarray:
    """Feature columns [N] (or one group [N, k]) as one [N, k] array."""
    if len(columns) == 1 and columns[0].ndim == 2:
        return columns[0]
    return np.stack(np.broadcast_arrays(*columns), axis=-1)


def _position(d: Mapping, where: str) -> tuple[str, ...]:
    return _names(d["position"], f"{where}.position", 2)


def _distance(d: Mapping, where: str) -> Term:
    names = _names(d["position"], f"{where}.position")
    point = _vector(d["point"], f"{where}.point", len(names))
    return Term(dict(d), names, lambda *c: np.linalg.norm(_stack(*c) - point, axis=-1))


def _clearance(d: Mapping, where: str) -> Term:
    shapes = d["shapes"]
    if not isinstance(shapes, list) or not shapes:
        raise TermError(f"{where}.shapes must be a non-empty list of shapes, got {shapes!r}")
    sdfs = [shape_sdf(s, f"{where}.shapes[{i}]") for i, s in enumerate(shapes)]
    def fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        p = _stack(x, y)
        return np.min([f(p) for f in sdfs], axis=0)
    return Term(dict(d), _position(d, where), fn)


def _geofence(d: Mapping, where: str) -> Term:
    shape = {k: d[k] for k in ("polygon", "box") if k in d}
    if len(shape) != 1:
        raise TermError(f"{where} needs exactly one of polygon: [[x, y], ...] or box: {{center, size}}")
    sdf = shape_sdf(shape, where)
    return Term(dict(d), _position(d, where), lambda x, y: -sdf(_stack(x, y)))


def _lidar_clearance(d: Mapping, where: str) -> Term:
    radius = _number(d["radius"], f"{where}.radius")
    return Term(dict(d), _names(d["ranges"], f"{where}.ranges"), lambda *c: _stack(*c).min(axis=-1) - radius)


def _speed_above(d: Mapping, where: str) -> Term:
    limit = _number(d["limit"], f"{where}.limit")
    return Term(dict(d), _names(d["velocity"], f"{where}.velocity"),
                lambda *c: np.linalg.norm(_stack(*c), axis=-1) - limit)


def _joint_limits(d: Mapping, where: str) -> Term:
    names = _names(d["positions"], f"{where}.positions")
    low, high = (_vector(d[k], f"{where}.{k}", len(names)) for k in ("low", "high"))
    if not (low < high).all():
        raise TermError(f"{where}: every low must be below its high, got low {d['low']} high {d['high']}")
    return Term(dict(d), names, lambda *c: np.minimum(_stack(*c) - low, high - _stack(*c)).min(axis=-1))


# kind -> (builder, required keys, optional keys)
KINDS = {
    "distance": (_distance, {"position", "point"}, set()),
    "clearance": (_clearance, {"position", "shapes"}, set()),
    "geofence": (_geofence, {"position"}, {"polygon", "box"}),
    "lidar_clearance": (_lidar_clearance, {"ranges", "radius"}, set()),
    "speed_above": (_speed_above, {"velocity", "limit"}, set()),
    "joint_limits": (_joint_limits, {"positions", "low", "high"}, set()),
}


def build_term(d: Any, where: str) -> Term:
    """A term from its YAML mapping `{kind: ..., ...}`."""
    if not isinstance(d, Mapping) or d.get("kind") not in KINDS:
        kind = d.get("kind") if isinstance(d, Mapping) else d
        raise TermError(f"{where} must be a mapping with `kind:` one of {sorted(KINDS)}, got {kind!r}")
    builder, required, optional = KINDS[d["kind"]]
    keys = set(d) - {"kind"}
    missing, unknown = sorted(required - keys), sorted(keys - required - optional)
    if missing or unknown:
        raise TermError(f"{where} ({d['kind']}): " + "; ".join(
            [f"lacks {missing}"] * bool(missing) + [f"has unknown {unknown}"] * bool(unknown))
            + f"; valid keys: {sorted(required | optional)}")
    return builder(d, where)
