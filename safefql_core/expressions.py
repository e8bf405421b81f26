"""Safe arithmetic expressions over named features, for reward and safety margin in a task YAML.

A user writes e.g. `margin: "0.3 - min(scan)"` or `reward: "-hypot(x - 2, y) - 0.1 * abs(w)"`.
The text is parsed with Python's `ast` (a parser: nothing is executed) and evaluated by a
small interpreter that knows only numbers, feature names, arithmetic, comparisons,
`a if c else b`, and the whitelisted numpy functions in `FUNCTIONS`. No attribute access,
subscripts, keywords, lambdas or imports: a YAML file can compute, never run code.

Evaluation is vectorised: every name maps to an array [N] (one value per tick) or [N, k]
(a group such as a LaserScan's sectors), so the converter evaluates a whole dataset in one
call and the node one tick with N = 1, through the same code. Literals are floats, so
`9 ** 9 ** 9` overflows to inf instead of building a huge integer.
"""
from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

MAX_LENGTH = 2000  # characters: an expression is a formula, not a program
MAX_NODES = 400


def _reduce_or_elementwise(elementwise: Callable, reduce: Callable) -> Callable:
    """min/max: over a group's values with one argument, elementwise across several."""
    def fn(*args: np.ndarray) -> np.ndarray:
        if len(args) == 1:
            return reduce(args[0], axis=-1) if np.ndim(args[0]) > 1 else args[0]
        out = args[0]
        for a in args[1:]:
            out = elementwise(out, a)
        return out
    return fn


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """An angle in radians wrapped to [-pi, pi)."""
    return np.mod(np.asarray(a) + np.pi, 2.0 * np.pi) - np.pi


# name -> (function, (min args, max args or None for any))
FUNCTIONS: dict[str, tuple[Callable, tuple[int, int | None]]] = {
    **{name: (getattr(np, name), (1, 1)) for name in
       ("abs", "sqrt", "exp", "log", "sin", "cos", "tan", "tanh", "floor", "ceil", "sign")},
    "asin": (np.arcsin, (1, 1)), "acos": (np.arccos, (1, 1)), "atan": (np.arctan, (1, 1)),
    "atan2": (np.arctan2, (2, 2)), "hypot": (lambda *a: np.sqrt(sum(np.square(x) for x in a)), (1, None)),
    "min": (_reduce_or_elementwise(np.minimum, np.min), (1, None)),
    "max": (_reduce_or_elementwise(np.maximum, np.max), (1, None)),
    "sum": (lambda a: np.sum(a, axis=-1) if np.ndim(a) > 1 else a, (1, 1)),
    "clip": (np.clip, (3, 3)), "where": (lambda c, a, b: np.where(c != 0, a, b), (3, 3)),
    "wrap": (wrap_angle, (1, 1)),
}
CONSTANTS = {"pi": np.pi, "e": np.e, "inf": np.inf}
Operation = Callable[..., Any]
_BINARY: dict[type[ast.operator], Operation] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.Mod: np.mod}
_COMPARE: dict[type[ast.cmpop], Operation] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne}
_UNARY: dict[type[ast.unaryop], Operation] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: lambda a: (a == 0).astype(np.float64)}


class ExpressionError(ValueError):
    """An expression that is not allowed or cannot be evaluated; says where and what is allowed."""


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression; call it with a mapping of names to arrays."""

    text: str
    tree: ast.Expression = field(repr=False, compare=False)
    names: frozenset[str] = field(compare=False)

    @classmethod
    def parse(cls, text: str | float | int) -> Expression:
        """Parse and check `text` (a number is a constant expression)."""
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise ExpressionError(f"an expression must be text or a number, got {text!r}")
        text = str(text).strip()
        if not text or len(text) > MAX_LENGTH:
            raise ExpressionError(f"an expression must have 1 to {MAX_LENGTH} characters, got {len(text)}")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"'{text}' is not a valid expression ({exc.msg} at column {exc.offset})") from None
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_NODES:
            raise ExpressionError(f"'{text[:60]}...' is too long ({len(nodes)} parts, at most {MAX_NODES})")
        called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
        names = set()
        for node in nodes:
            _check(node, text)
            if isinstance(node, ast.Name) and node.id in FUNCTIONS and id(node) not in called:
                raise ExpressionError(f"'{text}': {node.id} is a function; call it, e.g. {node.id}(x)")
            if isinstance(node, ast.Name) and node.id not in FUNCTIONS and node.id not in CONSTANTS:
                names.add(node.id)
        return cls(text, tree, frozenset(names))

    def __call__(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = sorted(self.names - set(values))
        if missing:
            raise ExpressionError(f"'{self.text}' uses unknown name(s) {missing}; known: {sorted(values)}")
        with np.errstate(all="ignore"):  # NaN / inf are reported by the caller, with their ticks
            return np.asarray(_eval(self.tree.body, values), dtype=np.float64)


def _check(node: ast.AST, text: str) -> None:
    """Refuse every construct the interpreter does not implement, naming it."""
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp, ast.Call, ast.Name,
               ast.Constant, ast.Load, ast.And, ast.Or, *_BINARY, *_COMPARE, *_UNARY)
    if not isinstance(node, allowed):
        raise ExpressionError(f"'{text}': {type(node).__name__} is not allowed; use numbers, feature names, "
                              f"+ - * / ** %, comparisons, and/or/not, 'a if c else b' and the functions "
                              f"{sorted(FUNCTIONS)}")
    if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, (int, float))):
        raise ExpressionError(f"'{text}': only numbers are allowed as constants, got {node.value!r}")
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            raise ExpressionError(f"'{text}': unknown function {ast.unparse(node.func)!r}; "
                                  f"available: {sorted(FUNCTIONS)}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(f"'{text}': {name}() takes plain positional arguments")
        low, high = FUNCTIONS[name][1]
        if len(node.args) < low or (high is not None and len(node.args) > high):
            count = str(low) if low == high else f"at least {low}" if high is None else f"{low} to {high}"
            raise ExpressionError(f"'{text}': {name}() takes {count} argument(s), got {len(node.args)}")


def _eval(node: ast.AST, values: Mapping[str, np.ndarray]) -> np.ndarray | np.float64:
    if isinstance(node, ast.Constant):
        return np.float64(cast(float, node.value))  # a number: checked at parse time
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return np.float64(CONSTANTS[node.id])
        return np.asarray(values[node.id], dtype=np.float64)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](np.asarray(_eval(node.operand, values), dtype=np.float64))
    if isinstance(node, ast.Compare):
        left, result = _eval(node.left, values), True
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, values)
            result = np.logical_and(result, _COMPARE[type(op)](left, right))
            left = right
        return np.asarray(result, dtype=np.float64)
    if isinstance(node, ast.BoolOp):
        parts = [np.asarray(_eval(v, values)) != 0 for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = parts[0]
        for p in parts[1:]:
            out = combine(out, p)
        return np.asarray(out, dtype=np.float64)
    if isinstance(node, ast.IfExp):
        return np.where(np.asarray(_eval(node.test, values)) != 0, _eval(node.body, values),
                        _eval(node.orelse, values))
    call = cast(ast.Call, node)  # the only node left: checked at parse time, as its name
    fn = FUNCTIONS[cast(ast.Name, call.func).id][0]
    return fn(*(_eval(a, values) for a in call.args))
