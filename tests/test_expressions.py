"""Reward / margin expressions (a whitelisted interpreter, never eval) and the ready-made terms."""
import numpy as np
import pytest

from safefql_core.envs import boat
from safefql_core.expressions import Expression, ExpressionError
from safefql_core.terms import TermError, box_sdf, build_term, polygon_sdf

X = np.array([-0.5, 1.5, 0.0, -1.0])
Y = np.array([0.5, 0.0, 0.0, -1.2])
VALUES = {"x": X, "y": Y, "scan": np.array([[1.0, 2.0], [3.0, 0.1], [1.0, 1.0], [2.0, 2.0]])}


@pytest.mark.parametrize("text, expected", [
    ("-hypot(x - 1.5, y)", -np.hypot(X - 1.5, Y)),
    ("min(scan) - 0.2", np.array([0.8, -0.1, 0.8, 1.8])),
    ("max(x, y, 0)", np.maximum(np.maximum(X, Y), 0)),
    ("1 if x > 0 else -1", np.where(X > 0, 1.0, -1.0)),
    ("-1 < x <= 0 and not y", np.array([0.0, 0.0, 1.0, 0.0])),
    ("wrap(x + 2 * pi)", X),
    ("x % 1", np.mod(X, 1)),
    ("clip(x, -0.5, 1) ** 2", np.clip(X, -0.5, 1) ** 2),
    ("atan2(y, x)", np.arctan2(Y, X)),
    ("where(y, 7, x)", np.where(Y != 0, 7.0, X)),
    ("sum(scan) / 2", VALUES["scan"].sum(axis=1) / 2),
    ("2.5", 2.5),
])
def test_expressions_compute_over_named_arrays(text, expected):
    np.testing.assert_allclose(Expression.parse(text)(VALUES), expected)


def test_names_are_collected_and_literals_never_build_huge_integers():
    assert Expression.parse("hypot(x, y) - min(scan) + pi").names == {"x", "y", "scan"}
    assert Expression.parse("9 ** 9 ** 9")({}) == np.inf  # a float overflow, not minutes of bignum work


@pytest.mark.parametrize("text, message", [
    ("__import__('os').system('touch PWNED')", r"unknown function \"__import__\('os'\).system\""),
    ("x.real", "Attribute is not allowed"),
    ("scan[0]", "Subscript is not allowed"),
    ("(lambda: 1)()", "unknown function 'lambda: 1'"),
    ("lambda: 1", "Lambda is not allowed"),
    ("[x for x in y]", "ListComp is not allowed"),
    ("'text'", "only numbers are allowed"),
    ("True", "only numbers are allowed"),
    ("min", "min is a function; call it"),
    ("clip(x, 0)", r"clip\(\) takes 3 argument\(s\), got 2"),
    ("sqrt(x=1)", "plain positional arguments"),
    ("x +", "is not a valid expression"),
    ("x := 3", "is not a valid expression"),
    ("", "1 to 2000 characters"),
])
def test_anything_but_arithmetic_is_refused_naming_it(text, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExpressionError, match=message):
        Expression.parse(text)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_names_are_listed_with_the_known_ones():
    with pytest.raises(ExpressionError, match=r"unknown name\(s\) \['z'\]; known: \['scan', 'x', 'y'\]"):
        Expression.parse("x + z")(VALUES)


BOAT_OBSTACLES = {"kind": "clearance", "position": ["x", "y"],
                  "shapes": [{"disc": {"center": [-0.5, 0.5], "radius": 0.4}},
                             {"disc": {"center": [-1.0, -1.2], "radius": 0.5}}]}


def test_the_boats_functions_are_two_terms():
    obs = np.stack([X, Y], axis=1)
    to_goal = build_term({"kind": "distance", "position": ["x", "y"], "point": [1.5, 0.0]}, "to_goal")
    np.testing.assert_allclose(-to_goal(VALUES), boat.reward(obs))
    np.testing.assert_allclose(-build_term(BOAT_OBSTACLES, "obstacles")(VALUES), boat.margin(obs))


def test_polygon_and_box_signed_distances():
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    p = np.array([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [2.0, 2.0], [1.0, 0.3]])
    expected = [-1.0, -0.5, 2.0, np.sqrt(2.0), 0.0]
    np.testing.assert_allclose(polygon_sdf(p, square), expected, atol=1e-12)
    np.testing.assert_allclose(box_sdf(p, np.zeros(2), np.array([2.0, 2.0])), expected, atol=1e-12)
    rng = np.random.default_rng(0)
    q = rng.uniform(-3, 3, (500, 2))
    np.testing.assert_allclose(polygon_sdf(q, square * [2, 0.5]), box_sdf(q, np.zeros(2), np.array([4.0, 1.0])),
                               atol=1e-12)
    ell = np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], dtype=float)  # concave: the notch is outside
    np.testing.assert_allclose(polygon_sdf(np.array([[1.5, 1.5], [0.5, 1.5], [1.5, 0.5]]), ell), [0.5, -0.5, -0.5])


def test_geofence_lidar_speed_and_joint_terms():
    fence = build_term({"kind": "geofence", "position": ["x", "y"],
                        "polygon": [[-1, -1], [1, -1], [1, 1], [-1, 1]]}, "fence")
    np.testing.assert_allclose(fence(VALUES), [0.5, -0.5, 1.0, -0.2])  # positive inside the fence
    box_fence = build_term({"kind": "geofence", "position": ["x", "y"], "box": {"center": [0, 0], "size": [2, 2]}}, "f")
    np.testing.assert_allclose(box_fence(VALUES), fence(VALUES))
    lidar = build_term({"kind": "lidar_clearance", "ranges": "scan", "radius": 0.2}, "lidar")
    np.testing.assert_allclose(lidar(VALUES), [0.8, -0.1, 0.8, 1.8])
    speed = build_term({"kind": "speed_above", "velocity": ["x", "y"], "limit": 1.0}, "speed")
    np.testing.assert_allclose(speed(VALUES), np.hypot(X, Y) - 1.0)
    joints = build_term({"kind": "joint_limits", "positions": ["x", "y"], "low": [-1, -1], "high": [1, 2]}, "j")
    np.testing.assert_allclose(joints(VALUES), [0.5, -0.5, 1.0, -0.2])


@pytest.mark.parametrize("term, message", [
    ({"kind": "teleport"}, r"`kind:` one of \['clearance', 'distance'"),
    ({"kind": "distance", "position": ["x", "y"]}, r"lacks \['point'\]"),
    ({"kind": "distance", "position": ["x", "y"], "point": [1, 2], "radius": 1}, r"has unknown \['radius'\]"),
    ({"kind": "distance", "position": ["x", "y"], "point": [1, 2, 3]}, r"point must be 2 finite number"),
    ({"kind": "clearance", "position": ["x", "y"], "shapes": [{"disc": {"center": [0, 0], "radius": -1}}]},
     r"radius must be positive"),
    ({"kind": "clearance", "position": ["x", "y"], "shapes": [{"star": {}}]}, "unknown shape 'star'"),
    ({"kind": "geofence", "position": ["x", "y"], "polygon": [[0, 0], [1, 1]]}, "at least 3 finite"),
    ({"kind": "joint_limits", "positions": ["x"], "low": [1], "high": [0]}, "every low must be below its high"),
])
def test_bad_term_declarations_name_the_key(term, message):
    with pytest.raises(TermError, match=message):
        build_term(term, "terms.t")
