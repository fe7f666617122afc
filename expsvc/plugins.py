"""Plugin discovery and loading.

Order: the built-ins (:data:`expsvc.builtins.DEFAULT_PLUGINS`), then installed packages through the
entry-point group ``expsvc``, then every ``.py`` file of the local plugins folder (``./plugins``;
``--plugins-dir`` / ``EXPSVC_PLUGINS_DIR`` override).  ``EXPSVC_LOAD_PLUGINS`` (comma-separated entry-point,
package or file names; empty = none) limits the third-party plugins.  Nothing loads when ``expsvc`` is
imported: :func:`get_system` loads on first use.

A plugin that fails to import, has a hook name that is not a spec, or raises while registering is
isolated: its registrations are rolled back, one line goes to stderr, and ``expsvc plugins`` shows the
error.  Every other plugin keeps working.  "Raises" means anything: ``SystemExit``, a ``KeyboardInterrupt``
the plugin raises itself, any ``BaseException``.  Only the user's own Ctrl-C (a SIGINT that arrived while
the plugin loaded, see :mod:`expsvc.interrupts`) is never isolated: it stops the program.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from expsvc import hookspecs, interrupts
from expsvc.errors import did_you_mean, one_line
from expsvc.registry import KINDS, Registration, Registry, base_class, check_name, describe_exception

HOOK_NAMES = tuple(name for name in dir(hookspecs) if name.startswith("register_"))


@dataclass
class PluginInfo:
    """What ``expsvc plugins`` shows about one plugin."""

    name: str
    source: str  # builtin | package | file
    version: str | None = None
    package: str | None = None
    path: str | None = None
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "version": self.version,
            "package": self.package,
            "path": self.path,
            "hooks": self.hooks,
            "components": self.components,
            "status": self.status,
            "error": self.error,
        }


class PluginError(Exception):
    """Raised inside loading to isolate one plugin."""


@dataclass
class PluginSystem:
    """The loaded plugins, their pluggy manager and the registry they filled."""

    pm: pluggy.PluginManager
    registry: Registry
    plugins: list[PluginInfo]

    def info(self, name: str) -> PluginInfo | None:
        return next((p for p in self.plugins if p.name == name), None)

    def provenance(self, reg: Registration) -> PluginInfo:
        info = self.info(reg.plugin)
        assert info is not None
        return info

    def add_commands(self, app: Any, warn: Callable[[str], None] | None = None) -> None:
        """Let plugins add CLI commands; a plugin that raises (anything but the user's Ctrl-C) is reported
        and skipped."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            with interrupts.watching() as before:
                try:
                    impl.function(app=app)
                except BaseException as err:  # plugin boundary: plugin code may raise anything
                    _reraise_user_interrupt(err, before)
                    info, reason = self.info(impl.plugin_name), describe_exception(err)
                    if info is not None:
                        info.status, info.error = "error", f"register_commands: {reason}"
                    (warn or _warn)(f"plugin {impl.plugin_name!r} failed in register_commands: {reason}")
            _reraise_user_interrupt(None, before)


def _warn(message: str) -> None:
    print(f"expsvc: {one_line(message)}", file=sys.stderr)


def _reraise_user_interrupt(err: BaseException | None, before: int) -> None:
    """Re-raise if the user pressed Ctrl-C since ``before`` (even if the plugin swallowed it), never
    isolating it as a plugin failure; a ``KeyboardInterrupt`` raised with no Ctrl-C is the plugin's own."""
    if interrupts.user_pressed() > before:
        if isinstance(err, KeyboardInterrupt):
            raise err
        raise KeyboardInterrupt


def _allowed(names: tuple[str, ...]) -> bool:
    raw = os.environ.get("EXPSVC_LOAD_PLUGINS")
    if raw is None:
        return True
    wanted = {n.strip() for n in raw.split(",") if n.strip()}
    return any(n in wanted for n in names if n)


def default_plugins_dir() -> Path:
    return Path(os.environ.get("EXPSVC_PLUGINS_DIR") or "plugins")


class _Loader:
    def __init__(self, warn: Callable[[str], None]) -> None:
        self.pm = pluggy.PluginManager("expsvc")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: list[PluginInfo] = []
        self.warn = warn

    def _check_hooks(self, module: Any) -> list[str]:
        hooks = []
        for attr in dir(module):
            opts = self.pm.parse_hookimpl_opts(module, attr)
            if opts is None:
                continue
            if attr not in HOOK_NAMES:
                raise PluginError(f"unknown hook {attr!r}{did_you_mean(attr, HOOK_NAMES)}")
            hooks.append(attr)
        return hooks

    def _register_fn(self, kind: str, plugin: str) -> Callable[..., type]:
        base = base_class(kind)

        def register(cls: type, *, name: str | None = None, aliases: tuple[str, ...] = (), override: bool = False):
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"{kind} {cls!r} must be a subclass of expsvc.{base.__name__}")
            reg_name = check_name(name or getattr(cls, "name", "") or "")
            aliases = tuple(check_name(a) for a in ((aliases,) if isinstance(aliases, str) else aliases))
            self.registry.add(Registration(kind, reg_name, cls, plugin, aliases, bool(override)))
            return cls

        return register

    def add(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        """Import, validate, register and run the registration hooks of one plugin; isolate failures."""
        self.plugins.append(info)
        with interrupts.watching() as before:
            self._add(info, load, before)
        _reraise_user_interrupt(None, before)

    def _add(self, info: PluginInfo, load: Callable[[], Any], before: int) -> None:
        module = None
        try:
            module = load()
            info.hooks = self._check_hooks(module)
            if self.pm.get_plugin(info.name) is not None:
                raise PluginError(f"a plugin named {info.name!r} is already loaded")
            self.pm.register(module, name=info.name)
            for kind, hook in KINDS.items():
                for impl in getattr(self.pm.hook, hook).get_hookimpls():
                    if impl.plugin is module:
                        impl.function(register=self._register_fn(kind, info.name))
        except BaseException as err:  # plugin boundary: a plugin must never take the others down
            _reraise_user_interrupt(err, before)
            self.registry.remove_plugin(info.name)
            if module is not None and self.pm.is_registered(module):
                self.pm.unregister(module)
            info.status, info.error = "error", describe_exception(err)
            info.components = {}
            self.warn(f"plugin {info.name!r} failed to load ({info.error}); see 'expsvc plugins'")
            return
        info.components = {
            kind: sorted(r.name for r in self.registry.registrations(kind) if r.plugin == info.name)
            for kind in KINDS
        }
        info.components = {k: v for k, v in info.components.items() if v}


def _load_file(path: Path) -> types.ModuleType:
    from expsvc.files import readable_file

    readable_file(path, "plugin file", PluginError)  # a FIFO named x.py would block the import forever
    module_name = f"expsvc_local_plugins.{path.stem}"
    if "expsvc_local_plugins" not in sys.modules:  # the parent, so pickle can import its components' module
        parent = types.ModuleType("expsvc_local_plugins", "The plugins folder's .py files (see load_plugins).")
        parent.__path__ = []
        sys.modules["expsvc_local_plugins"] = parent
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_plugins(
    plugins_dir: str | Path | None = None, warn: Callable[[str], None] | None = None
) -> PluginSystem:
    """Discover and load every plugin (see the module docstring for the order and the rules)."""
    from expsvc import __version__
    from expsvc.builtins import DEFAULT_PLUGINS

    loader = _Loader(warn or _warn)
    for module_name in DEFAULT_PLUGINS:
        info = PluginInfo(name=module_name, source="builtin", version=__version__, package="expsvc")
        loader.add(info, lambda m=module_name: importlib.import_module(m))

    for ep in sorted(importlib.metadata.entry_points(group="expsvc"), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        package = dist.metadata["Name"] if dist is not None else None
        if not _allowed((ep.name, package)):
            continue
        info = PluginInfo(
            name=ep.name, source="package", version=dist.version if dist else None, package=package, path=ep.value
        )
        loader.add(info, ep.load)

    folder = Path(plugins_dir) if plugins_dir is not None else default_plugins_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_") or not _allowed((path.stem, path.name)):
                continue
            info = PluginInfo(name=f"file:{path.stem}", source="file", path=str(path))

            def load(p: Path = path, i: PluginInfo = info) -> types.ModuleType:
                module = _load_file(p)
                i.version = str(getattr(module, "__version__", "")) or None
                return module

            loader.add(info, load)

    loader.pm.check_pending()
    return PluginSystem(loader.pm, loader.registry, loader.plugins)


def may_add_commands(plugins_dir: str | Path | None = None) -> bool:
    """Whether any third-party plugin could implement ``register_commands``, judged from source text.

    Checked without importing anything (an entry point's module file or a local plugin file is read and
    searched for the hook's name), so the CLI only loads plugins — and numpy with them — at start-up when
    some plugin adds commands.  A plugin's ``register_commands`` must therefore be defined or imported by
    name in the module its entry point names.
    """
    sources: list[Path] = []
    for ep in importlib.metadata.entry_points(group="expsvc"):
        dist = getattr(ep, "dist", None)
        if not _allowed((ep.name, dist.metadata["Name"] if dist is not None else None)):
            continue
        try:
            spec = importlib.util.find_spec(ep.module)
        except (ImportError, ValueError):
            return True  # let the real load report it
        if spec is None or not spec.origin or not spec.has_location:
            return True
        sources.append(Path(spec.origin))
    folder = Path(plugins_dir) if plugins_dir is not None else default_plugins_dir()
    if folder.is_dir():
        sources += [p for p in folder.glob("*.py") if not p.name.startswith("_") and _allowed((p.stem, p.name))]
    from expsvc.files import kind_of

    for path in sources:
        if kind_of(path) != "file":
            return True  # never open a FIFO; let the real load report it
        try:
            if "register_commands" in path.read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            return True
    return False


_SYSTEM: dict[str, PluginSystem] = {}


def get_system(plugins_dir: str | Path | None = None) -> PluginSystem:
    """The process-wide plugin system for ``plugins_dir`` (loaded once)."""
    folder = str(Path(plugins_dir) if plugins_dir is not None else default_plugins_dir())
    key = f"{folder}|{os.environ.get('EXPSVC_LOAD_PLUGINS')}"
    if key not in _SYSTEM:
        _SYSTEM[key] = load_plugins(folder)
    return _SYSTEM[key]


def reset() -> None:
    """Forget loaded plugin systems (tests)."""
    _SYSTEM.clear()
