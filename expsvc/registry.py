"""The name registry: which class answers to which name, in which kind, from which plugin."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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


def instantiate(reg: Registration, spec: ComponentSpec, what: str) -> Any:
    """``reg.cls(*spec.args, **spec.kwargs)``; a wrong argument becomes one line naming what is allowed."""
    allowed = allowed_arguments(reg.cls)
    try:
        sig = inspect.signature(reg.cls)
        sig.bind(*spec.args, **spec.kwargs)
    except TypeError as err:
        unknown = [k for k in spec.kwargs if k not in allowed]
        hint = did_you_mean(unknown[0], allowed) if unknown else ""
        raise ExpsvcError(
            f"{what} {str(spec)!r}: {err}{hint}; allowed arguments: {', '.join(allowed) or 'none'}"
        ) from None
    except ValueError:
        pass
    try:
        return reg.cls(*spec.args, **spec.kwargs)
    except (TypeError, ValueError) as err:
        raise ExpsvcError(f"{what} {str(spec)!r}: {err}") from None


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"component names must be identifiers, got {name!r}")
    return name
