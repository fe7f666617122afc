"""Plugin discovery and isolation: built-ins, real installed distributions (dist-info on sys.path), local files."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from expsvc.errors import ExpsvcError
from expsvc.plugins import load_plugins
from expsvc.registry import ComponentConflict, UnknownComponent
from tests.conftest import CUBE_PLUGIN, REPO, run_cli

BUILTIN_COMPONENTS = {
    "layer": {"linear", "polynomial"},
    "activation": {"tanh", "sigmoid", "relu", "leaky_relu", "softmax", "identity"},
    "loss": {"bce_with_logits", "mse", "sum_squared", "cross_entropy"},
    "optimizer": {"mini_bgd", "sgd", "adam", "adamw"},
    "scheduler": {"constant", "step", "cosine"},
    "dataset": {"points", "moons", "circles", "spirals", "xor", "blobs", "linear_1d", "quadratic_1d",
                "random_regression", "file"},
    "metric": {"accuracy", "precision", "recall", "f1", "mse"},
}

PLUGIN_MODULE = CUBE_PLUGIN


def install_distribution(root: Path, dist: str, version: str, module: str, source: str,
                         entry_name: str | None = None) -> None:
    """Write a real installed distribution: the module and its ``.dist-info`` with an ``expsvc`` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[expsvc]\n{entry_name or dist} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.startswith(("xp_", "expsvc_local_plugins"))]:
        del sys.modules[name]


def test_every_builtin_is_registered_with_version_and_source() -> None:
    system = load_plugins()
    for kind, names in BUILTIN_COMPONENTS.items():
        assert names <= set(system.registry.names(kind)), kind
    builtin = [p for p in system.plugins if p.source == "builtin"]
    assert builtin and all(p.status == "ok" and p.version and p.package == "expsvc" for p in builtin)


def test_plugins_json_lists_builtins_by_kind() -> None:
    proc = run_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    listed: dict[str, set[str]] = {}
    for plugin in json.loads(proc.stdout):
        assert plugin["source"] == "builtin" and plugin["version"] and plugin["status"] == "ok"
        for kind, names in plugin["components"].items():
            listed.setdefault(kind, set()).update(names)
    for kind, names in BUILTIN_COMPONENTS.items():
        assert names <= listed[kind], kind


def test_third_party_distribution_is_discovered_through_its_entry_point(site: Path) -> None:
    install_distribution(site, "xp-cube", "1.2.3", "xp_cube", PLUGIN_MODULE)
    system = load_plugins()
    info = system.info("xp-cube")
    assert info is not None and info.source == "package"
    assert (info.package, info.version, info.status) == ("xp-cube", "1.2.3", "ok")
    assert info.components == {"activation": ["cube"]}
    assert system.registry.resolve("activation", "cubic").cls.__name__ == "Cube"
    layer = system.registry.create("activation", "cube")
    from expsvc.core import gradcheck

    assert gradcheck(layer).passed


def test_broken_plugin_is_isolated_and_reported(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install_distribution(site, "xp-good", "1.0", "xp_good", PLUGIN_MODULE)
    install_distribution(site, "xp-broken", "0.1", "xp_broken", "import no_such_module_anywhere\n")
    system = load_plugins()
    broken = system.info("xp-broken")
    assert broken is not None and broken.status == "error"
    assert "no_such_module_anywhere" in (broken.error or "")
    assert system.info("xp-good").status == "ok"  # type: ignore[union-attr]
    assert "cube" in system.registry.names("activation") and "linear" in system.registry.names("layer")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xp-broken" in err[0]


def test_partial_registration_is_rolled_back(site: Path) -> None:
    source = PLUGIN_MODULE.replace('    register(Cube, aliases=("cubic",))',
                                   '    register(Cube, aliases=("cubic",))\n    raise RuntimeError("half way")')
    install_distribution(site, "xp-half", "1.0", "xp_half", source)
    system = load_plugins()
    assert system.info("xp-half").status == "error"  # type: ignore[union-attr]
    assert "cube" not in system.registry.names("activation")
    assert "cubic" not in system.registry.names("activation")


def test_registering_a_non_component_fails_the_plugin(site: Path) -> None:
    install_distribution(site, "xp-bad", "1.0", "xp_bad", """
        from expsvc import hookimpl
        @hookimpl
        def register_losses(register):
            register(dict)
    """)
    system = load_plugins()
    info = system.info("xp-bad")
    assert info is not None and info.status == "error" and "subclass of expsvc.Loss" in (info.error or "")


def test_conflict_names_both_plugins_and_other_names_keep_working(site: Path) -> None:
    install_distribution(site, "xp-one", "1.0", "xp_one", PLUGIN_MODULE)
    install_distribution(site, "xp-two", "1.0", "xp_two", PLUGIN_MODULE.replace('aliases=("cubic",)', ""))
    system = load_plugins()
    with pytest.raises(ComponentConflict) as err:
        system.registry.resolve("activation", "cube")
    assert "'xp-one'" in str(err.value) and "'xp-two'" in str(err.value)
    assert system.registry.resolve("activation", "cubic").plugin == "xp-one"
    assert system.registry.resolve("activation", "tanh").plugin == "expsvc.builtins.activations"


def test_override_resolves_the_conflict(site: Path) -> None:
    source = PLUGIN_MODULE.replace("class Cube", "class Tanh2").replace('name = "cube"', 'name = "tanh"')
    source = source.replace('register(Cube, aliases=("cubic",))', "register(Tanh2, override=True)")
    install_distribution(site, "xp-override", "1.0", "xp_override", source)
    system = load_plugins()
    assert system.registry.resolve("activation", "tanh").plugin == "xp-override"


def test_misspelled_hook_fails_loudly(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install_distribution(site, "xp-typo", "1.0", "xp_typo", PLUGIN_MODULE.replace(
        "def register_activations", "def register_activation"))
    system = load_plugins()
    info = system.info("xp-typo")
    assert info is not None and info.status == "error"
    assert "unknown hook 'register_activation'" in (info.error or "")
    assert "did you mean 'register_activations'" in (info.error or "")
    assert "xp-typo" in capsys.readouterr().err


def test_load_plugins_env_limits_third_party(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_distribution(site, "xp-cube", "1.0", "xp_cube", PLUGIN_MODULE)
    monkeypatch.setenv("EXPSVC_LOAD_PLUGINS", "")
    system = load_plugins()
    assert system.info("xp-cube") is None and "linear" in system.registry.names("layer")
    monkeypatch.setenv("EXPSVC_LOAD_PLUGINS", "xp-cube")
    assert load_plugins().info("xp-cube") is not None


def test_unknown_name_lists_available_with_did_you_mean() -> None:
    system = load_plugins()
    with pytest.raises(UnknownComponent) as err:
        system.registry.resolve("optimizer", "adamww")
    message = str(err.value)
    assert "did you mean 'adamw'" in message and "mini_bgd" in message and "\n" not in message


def test_bad_arguments_name_what_is_allowed() -> None:
    system = load_plugins()
    with pytest.raises(ExpsvcError, match=r"did you mean 'weight_decay'.*allowed arguments: lr, betas"):
        system.registry.create("optimizer", "adamw(weight_dcay=0)")
    with pytest.raises(ExpsvcError, match="lr must be >= 0"):
        system.registry.create("optimizer", "adamw(lr=-1)")


def test_local_plugins_folder_example_loads_and_passes_gradcheck(tmp_path: Path) -> None:
    system = load_plugins(REPO / "plugins")
    info = system.info("file:softplus")
    assert info is not None and info.status == "ok" and info.version == "1.0.0"
    assert info.components == {"activation": ["softplus"]}
    from expsvc.core import gradcheck

    for spec in ("softplus", "softplus(beta=2.5)"):
        assert gradcheck(system.registry.create("activation", spec)).passed


def test_gradcheck_cli_on_example_plugin_and_on_a_wrong_backward(tmp_path: Path) -> None:
    proc = run_cli("--plugins-dir", str(REPO / "plugins"), "gradcheck", "softplus(beta=2)")
    assert proc.returncode == 0 and "passed" in proc.stdout, proc.stdout + proc.stderr
    bad = tmp_path / "myplugins"
    bad.mkdir()
    (bad / "wrong.py").write_text(PLUGIN_MODULE.replace("dy * 3 * self.x ** 2", "dy * 2 * self.x ** 2"))
    proc = run_cli("--plugins-dir", str(bad), "gradcheck", "cube")
    assert proc.returncode == 1 and "FAILED" in proc.stdout


def test_help_works_with_a_broken_local_plugin(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "run" in proc.stdout and not proc.stderr
    run = run_cli("run", "--seeds", "1", "--epochs", "1", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "boom at import" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    listing = run_cli("plugins", "--json", cwd=tmp_path)
    broken = [p for p in json.loads(listing.stdout) if p["name"] == "file:broken"]
    assert broken and broken[0]["status"] == "error" and "boom at import" in broken[0]["error"]


def test_help_reports_a_broken_plugin_that_adds_commands(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "broken_cmd.py").write_text("raise RuntimeError('boom')\n# provides register_commands\n")
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "run" in proc.stdout
    assert "broken_cmd" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_help_does_not_import_plugins_that_add_no_commands(tmp_path: Path) -> None:
    code = ("import sys; from expsvc.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('numpy' in sys.modules, file=sys.stderr)")
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "softplus.py").write_text((REPO / "plugins" / "softplus.py").read_text())
    proc = __import__("subprocess").run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.stderr.strip() == "False", proc.stderr


def test_plugin_commands_are_added(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "hello.py").write_text(textwrap.dedent('''
        from expsvc import hookimpl

        @hookimpl
        def register_commands(app):
            @app.command()
            def hello(name: str = "world") -> None:
                """Say hello."""
                print(f"hello {name}")
    '''))
    proc = run_cli("hello", "--name", "plugin", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "hello plugin", proc.stderr


def test_importing_expsvc_loads_no_plugin() -> None:
    code = ("import sys, expsvc; "
            "print(any(m.startswith('expsvc.builtins.') for m in sys.modules), 'numpy' in sys.modules)")
    proc = __import__("subprocess").run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "False"]
