"""The name registry: which class answers to which name, in which kind, from which plugin."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections import abc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

from expsvc import interrupts
from expsvc.errors import ExpsvcError, did_you_mean
from expsvc.specs import ComponentSpec, parse

KINDS: dict[str, str] = {
    "layer": "register_layers",
    "activation": "register_activations",
    "loss": "register_losses",
    "optimizer": "register_optimizers",
    "scheduler": "register_schedulers",
    "dataset": "register_datasets",
    "metric": "register_metrics",
}
"""Kind -> the hook that registers it."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def base_class(kind: str) -> type:
    """The class every component of ``kind`` must subclass."""
    from expsvc import core

    return {
        "layer": core.Layer,
        "activation": core.Layer,
        "loss": core.Loss,
        "optimizer": core.Optimizer,
        "scheduler": core.Scheduler,
        "dataset": core.Dataset,
        "metric": core.Metric,
    }[kind]


class UnknownComponent(ExpsvcError):
    """A name no plugin registered."""


class ComponentConflict(ExpsvcError):
    """Two plugins registered the same name in one kind and neither overrides."""


@dataclass(frozen=True)
class Registration:
    """One registered component."""

    kind: str
    name: str
    cls: type
    plugin: str
    aliases: tuple[str, ...] = ()
    override: bool = False


@dataclass
class Registry:
    """Registrations by kind and name.  A name registered twice in a kind without ``override`` refuses to
    resolve (naming both plugins); every other name keeps working."""

    entries: dict[str, dict[str, list[Registration]]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    def add(self, reg: Registration) -> None:
        for key in (reg.name, *reg.aliases):
            self.entries[reg.kind].setdefault(key, []).append(reg)

    def remove_plugin(self, plugin: str) -> None:
        """Roll back everything ``plugin`` registered."""
        for by_name in self.entries.values():
            for key in list(by_name):
                by_name[key] = [r for r in by_name[key] if r.plugin != plugin]
                if not by_name[key]:
                    del by_name[key]

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def registrations(self, kind: str | None = None) -> list[Registration]:
        """Every registration (aliases folded), optionally of one kind."""
        seen: dict[int, Registration] = {}
        for k in [kind] if kind else list(KINDS):
            for regs in self.entries[k].values():
                for r in regs:
                    seen.setdefault(id(r), r)
        return list(seen.values())

    def resolve(self, kinds: str | Iterable[str], name: str) -> Registration:
        """The registration for ``name`` in the first of ``kinds`` that has it."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        for kind in kinds:
            regs = self.entries[kind].get(name)
            if not regs:
                continue
            if len(regs) == 1:
                return regs[0]
            overriding = [r for r in regs if r.override]
            if len(overriding) == 1:
                return overriding[0]
            plugins = " and ".join(repr(r.plugin) for r in (overriding or regs)[:2])
            raise ComponentConflict(
                f"{kind} {name!r} is registered by both {plugins}; "
                "uninstall one, or register with override=True"
            )
        label = " or ".join(kinds)
        available = sorted({n for k in kinds for n in self.entries[k]})
        raise UnknownComponent(
            f"unknown {label} {name!r}{did_you_mean(name, available)}; available: {', '.join(available) or 'none'}"
        )

    def create(self, kinds: str | Iterable[str], spec: str | ComponentSpec, what: str | None = None) -> Any:
        """Instantiate a component from its spec, with one-line errors for bad arguments."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        spec = parse(spec, what or kinds[0])
        reg = self.resolve(kinds, spec.name)
        return instantiate(reg, spec, what or reg.kind)


def allowed_arguments(cls: type) -> list[str]:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


class PluginFailure(ExpsvcError):
    """Plugin code (a component's ``__init__``, ``build``, ``forward``, a dataset's ``load``...) raised
    while expsvc checked it before any work: reported on one line naming the component and its plugin."""


def describe_exception(err: BaseException) -> str:
    """``RuntimeError: boom`` (type and first line of the message)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


Part = tuple[object, Registration, ComponentSpec]
"""A live component, its registration and its spec (what :func:`blame` searches a traceback for)."""


def blame(err: BaseException, parts: Iterable[Part]) -> tuple[Registration, ComponentSpec] | None:
    """The component whose method raised ``err``: the innermost frame of its traceback whose ``self`` is
    one of ``parts``' live objects (None when no component's code is on the traceback)."""
    by_id = {id(obj): (reg, spec) for obj, reg, spec in parts}
    found = None
    tb = err.__traceback__
    while tb is not None:
        owner = by_id.get(id(tb.tb_frame.f_locals.get("self")))
        found = owner or found
        tb = tb.tb_next
    return found


@contextmanager
def plugin_code(parts: Iterable[Part], what: str, action: str,
                passthrough: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Run plugin code: whatever it raises (but ``passthrough`` types, one-line errors and the user's
    Ctrl-C) becomes one :class:`PluginFailure` line naming the component (found on the traceback among
    ``parts``), its plugin and ``action``; ``what`` names the field when no single component is to blame.

    This is the one untrusted boundary of expsvc, so it catches everything, even ``SystemExit`` and a
    ``KeyboardInterrupt`` the plugin raises itself (no SIGINT arrived: see :mod:`expsvc.interrupts`);
    ``MemoryError`` says that the component needs more memory than there is.
    """
    listed = list(parts)
    with interrupts.watching() as before:
        try:
            yield
        except (ExpsvcError, *passthrough):
            raise
        except BaseException as err:  # plugin boundary: plugin code may raise anything, even SystemExit
            if interrupts.user_pressed() > before:
                raise
            _plugin_failure(err, listed, what, action)


def _plugin_failure(err: BaseException, listed: list[Part], what: str, action: str) -> NoReturn:
    """Raise the :class:`PluginFailure` line for ``err`` raised by plugin code (see :func:`plugin_code`)."""
    culprit = blame(err, listed) or (listed[0][1:] if len(listed) == 1 else None)
    if culprit is None:
        names = ", ".join(sorted({reg.plugin for _, reg, _ in listed}))
        subject = f"{what} (plugins {names})"
    else:
        reg, spec = culprit
        subject = f"{reg.kind} {str(spec)!r} (plugin {reg.plugin!r})"
    if isinstance(err, MemoryError):
        raise PluginFailure(f"{subject} needs more memory than is available ({action}: "
                            f"{describe_exception(err)})") from err
    raise PluginFailure(f"{subject} failed in {action}: {describe_exception(err)}") from err


def _hint_text(hint: Any) -> str:
    """A type hint in words: ``a number``, ``true or false``, ``text``..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "text"
    if hint is type(None):
        return "None"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_text(a) for a in args)
    if origin in (list, tuple, abc.Sequence):
        inner = f" of {_hint_text(args[0])}" if args and args[0] is not Ellipsis else ""
        return f"a list{inner}"
    if origin is dict or hint is dict:
        return "a table"
    return getattr(hint, "__name__", str(hint))


def fits(value: Any, hint: Any) -> bool:
    """Whether a spec literal ``value`` has the type ``hint`` promises (bools are not numbers; an int is a
    float); hints this cannot judge (classes, ``Any``, missing) accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or hint is inspect.Parameter.empty:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin in (list, tuple, abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return not inner or len(set(inner)) != 1 or all(fits(v, inner[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def argument_hints(cls: type) -> dict[str, Any]:
    """The type hints of ``cls.__init__``'s arguments (empty when they cannot be resolved)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # plugin boundary: evaluating a plugin's annotations runs its code
        return {}
    hints.pop("return", None)
    return hints


def _check_types(reg: Registration, spec: ComponentSpec, what: str, bound: inspect.BoundArguments) -> None:
    hints = argument_hints(reg.cls)
    for name, value in bound.arguments.items():
        hint = hints.get(name)
        kind = bound.signature.parameters[name].kind
        if hint is None or kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if not fits(value, hint):
            raise ExpsvcError(
                f"{what} {str(spec)!r}: {name}={value!r} is not allowed; expected {_hint_text(hint)}"
            )


def instantiate(reg: Registration, spec: ComponentSpec, what: str, columns: dict[str, Any] | None = None) -> Any:
    """``reg.cls(*spec.args, **spec.kwargs)``; a wrong argument (unknown, missing, of the wrong type, or
    refused by the component with a TypeError/ValueError) becomes one line naming what is allowed, and
    anything else the component's code raises becomes one :class:`PluginFailure` line.

    ``columns`` replace keyword arguments after the check (a grid's per-replica values, see
    :mod:`expsvc.core.optim`): ``spec`` holds one grid point's values, which are checked as usual."""
    allowed = allowed_arguments(reg.cls)
    try:
        sig = inspect.signature(reg.cls)
        bound = sig.bind(*spec.args, **spec.kwargs)
    except TypeError as err:
        unknown = [k for k in spec.kwargs if k not in allowed]
        hint = did_you_mean(unknown[0], allowed) if unknown else ""
        raise ExpsvcError(
            f"{what} {str(spec)!r}: {err}{hint}; allowed arguments: {', '.join(allowed) or 'none'}"
        ) from None
    except ValueError:
        bound = None
    if bound is not None:
        _check_types(reg, spec, what, bound)
    try:
        with plugin_code([(reg.cls, reg, spec)], what, "__init__", passthrough=(TypeError, ValueError)):
            return reg.cls(*spec.args, **{**spec.kwargs, **(columns or {})})
    except (TypeError, ValueError) as err:
        raise ExpsvcError(f"{what} {str(spec)!r}: {err}") from None


def resolved(reg: Registration, spec: ComponentSpec) -> ComponentSpec:
    """``spec`` with every constructor argument named and its default filled in — what a run stores as its
    component's spec, so ``show`` lists every argument that ran (``linear(5)`` → ``linear(out_features=5,
    bias=True, init='uniform')``).  A spec the signature cannot bind, or ``*args``, is returned as given."""
    try:
        sig = inspect.signature(reg.cls)
        bound = sig.bind(*spec.args, **spec.kwargs)
    except (TypeError, ValueError):
        return spec
    bound.apply_defaults()
    kwargs: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                return spec
        elif kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(value)
        else:
            kwargs[name] = value
    return ComponentSpec(spec.name, (), kwargs)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"component names must be identifiers, got {name!r}")
    return name
