"""Component specs as text: ``"linear(5), tanh, linear(1)"``, ``"adamw(lr=1e-3, weight_decay=0)"``.

Parsed with :mod:`ast`; arguments must be literals (numbers, strings, booleans, None, tuples, lists,
dicts) — nothing is ever evaluated — or the ranges ``logspace(a, b, n)`` / ``linspace(a, b, n)`` (``n`` points
from ``a`` to ``b``, evenly spaced on a log or a linear scale; ``logspace`` takes the values themselves, as
``numpy.geomspace`` does, never exponents; rounded to 12 significant digits), which stand for a :class:`Grid`
list of numbers.
Errors name the offending token and its column.  Text is parsed once, where it enters (flags, a TOML file, a
stored run); the runner passes the frozen :class:`ComponentSpec` values around and turns them back into text
only to store them.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

from expsvc.errors import ExpsvcError


class SpecError(ExpsvcError):
    """A component spec that does not parse."""


@dataclass(frozen=True)
class ComponentSpec:
    """One component: its registry name and literal arguments."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def __hash__(self) -> int:  # kwargs is a dict: hash the text, which is what equality compares anyway
        return hash(str(self))

    def with_defaults(self, **defaults: Any) -> ComponentSpec:
        """A copy with ``defaults`` added where the spec does not set them."""
        merged = {**defaults, **self.kwargs}
        return ComponentSpec(self.name, self.args, merged)


class Grid(list):  # type: ignore[type-arg]
    """A list of numbers written as ``logspace(...)``/``linspace(...)``: a grid, never a plain argument."""


RANGES = ("logspace", "linspace")
MAX_RANGE_POINTS = 100_000
"""Points one ``logspace``/``linspace`` may make (the runner's own limit on runs is the same number)."""


def make_range(kind: str, start: float, stop: float, count: int) -> Grid:
    """``linspace(start, stop, count)``, or ``logspace``: ``count`` values from ``start`` to ``stop`` evenly
    spaced on a log scale (``numpy.geomspace``: the bounds are values, ``logspace(1e-4, 1, 9)``, not numpy
    ``logspace``'s exponents); 12 significant digits; a ValueError names what is wrong.

    The bounds are values because that is how a learning-rate grid is written (DeepOBS: "1e-5 to 1e2"), and a
    bound that is not positive — numpy's exponent form, ``logspace(-4, -1, 4)`` — is refused with the value
    form to write instead, never read as something else."""
    import numpy as np

    for value in (start, stop):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{kind}: {value!r} is not a finite number")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_RANGE_POINTS:
        raise ValueError(f"{kind}: the number of points {count!r} is not allowed; expected an integer from 1 to "
                         f"{MAX_RANGE_POINTS:,}")
    if kind == "logspace" and not (start > 0 and stop > 0):
        hint = ""
        if all(float(v).is_integer() and abs(v) <= 30 for v in (start, stop)):
            hint = (f" (for 10^{start:g} .. 10^{stop:g} write logspace({10.0 ** start:g}, {10.0 ** stop:g}, "
                    f"{count}))")
        raise ValueError(f"logspace({start!r}, {stop!r}, {count!r}): the bounds are the values themselves and "
                         f"must be positive{hint}")
    with np.errstate(all="ignore"):  # an overflow is refused below in one line, never warned about
        values = np.geomspace(start, stop, count) if kind == "logspace" else np.linspace(start, stop, count)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{kind}({start!r}, {stop!r}, {count!r}) is not finite")
    return Grid(float(f"{v:.12g}") for v in values.tolist())


def _tree(text: str) -> ast.Expression:
    """The one place component text is parsed (tests count calls to check that specs are parsed once)."""
    return ast.parse(f"[{text}]", mode="eval")


def _fail(what: str, text: str, col: int, msg: str) -> SpecError:
    col = max(0, min(col, len(text)))
    match = re.match(r"\s*(\w+|\S)", text[col:])
    token = match.group(1) if match else "end of text"
    return SpecError(f"{what}: {msg} at column {col + 1} ({token!r}) in {text!r}")


def _finite(value: Any) -> bool:
    """Whether every number in a literal (nested in lists, tuples, dicts) is finite."""
    if isinstance(value, float | complex):
        return math.isfinite(abs(value))
    if isinstance(value, list | tuple | set):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(k) and _finite(v) for k, v in value.items())
    return True


def _literal(node: ast.expr, what: str, text: str) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RANGES:
        if node.keywords or len(node.args) != 3:
            raise _fail(what, text, node.col_offset - 1, f"{node.func.id} takes three numbers: (start, stop, count)")
        bounds = [_literal(a, what, text) for a in node.args]
        try:
            return make_range(node.func.id, *bounds)
        except ValueError as err:
            raise _fail(what, text, node.col_offset - 1, str(err)) from None
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise _fail(what, text, node.col_offset - 1, "arguments must be literal values") from err
    if not _finite(value):
        source = ast.get_source_segment(f"[{text}]", node) or "?"
        raise _fail(what, text, node.col_offset - 1, f"{source} is not a finite number")
    return value


def _element(node: ast.expr, what: str, text: str) -> ComponentSpec:
    if isinstance(node, ast.Name):
        return ComponentSpec(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = tuple(_literal(a, what, text) for a in node.args)
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise _fail(what, text, kw.value.col_offset - 3, "'**' is not allowed")
            if kw.arg in kwargs:
                raise _fail(what, text, kw.col_offset - 1, f"argument {kw.arg!r} is given twice")
            kwargs[kw.arg] = _literal(kw.value, what, text)
        return ComponentSpec(node.func.id, args, kwargs)
    raise _fail(what, text, node.col_offset - 1, "expected a name or name(arguments)")


def parse_list(text: str, what: str = "spec") -> list[ComponentSpec]:
    """Parse comma-separated components; ``what`` names the field in error messages."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"{what}: empty spec; expected e.g. 'linear(5), tanh, linear(1)'")
    if "\n" in text or "\r" in text:
        raise SpecError(f"{what}: a spec must be on one line, got {text!r}")
    try:
        tree = _tree(text)
    except SyntaxError as err:
        detail = "" if err.msg == "invalid syntax" else f" ({err.msg})"
        raise _fail(what, text, (err.offset or 1) - 2, f"invalid syntax{detail}") from None
    assert isinstance(tree.body, ast.List)
    if not tree.body.elts:
        raise SpecError(f"{what}: empty spec")
    return [_element(node, what, text) for node in tree.body.elts]


def parse(text: str | ComponentSpec, what: str = "spec") -> ComponentSpec:
    """Parse exactly one component."""
    if isinstance(text, ComponentSpec):
        return text
    items = parse_list(text, what)
    if len(items) != 1:
        raise SpecError(f"{what}: expected one component, got {len(items)} in {text!r}")
    return items[0]
