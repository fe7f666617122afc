"""No catch-all that hides bugs (issue 16, "done when" 4).

``except Exception``, ``except BaseException``, a bare ``except:`` and ``contextlib.suppress(Exception)``
hide expsvc's own bugs behind a message.  They are allowed only where they re-raise (clean-up, then
``raise``) or at the named boundaries below, where foreign code runs: plugin code (the one untrusted
boundary, reported with the plugin's name) and the training of a group (whatever happens there fails
the runs, with the traceback stored and the reason printed).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

BROAD = {"Exception", "BaseException"}

ALLOWED: dict[tuple[str, str], str] = {
    ("expsvc/registry.py", "plugin_code"): "plugin code raising during up-front validation",
    ("expsvc/registry.py", "argument_hints"): "evaluating a plugin's annotations runs its code",
    ("expsvc/plugins.py", "_Loader._add"): "importing and registering a plugin",
    ("expsvc/plugins.py", "PluginSystem.add_commands"): "a plugin's register_commands hook",
    ("expsvc/runner/execute.py", "execute_group"): "training runs plugin code; the runs fail with the traceback",
    ("expsvc/runner/dask.py", "DaskExecutor._run"): "a remote worker died or lost its task (the runs are marked)",
    ("expsvc/runner/dask.py", "DaskExecutor.close"): "closing a Dask client or cluster that may already be gone",
    ("expsvc/testing.py", "_plugin"): "the conformance kit runs plugin code: what it raises is the finding",
    ("expsvc/testing.py", "_pickles"): "pickling a plugin's state runs its code: what it raises is the finding",
    ("expsvc/report/server.py", "Handler._respond"): "one request of `expsvc ui`: a bug becomes a plain 500 page "
                                                     "(one line logged), never a traceback sent or a dead server",
}
"""``(file, function)`` -> why a catch-all is right there."""


def _is_broad(node: ast.expr | None) -> bool:
    if node is None:
        return True  # bare except
    if isinstance(node, ast.Name):
        return node.id in BROAD
    if isinstance(node, ast.Attribute):
        return node.attr in BROAD
    if isinstance(node, ast.Tuple):
        return any(_is_broad(e) for e in node.elts)
    return False


def _reraises(handler: ast.ExceptHandler) -> bool:
    """The handler ends by re-raising what it caught (a bare ``raise`` or ``raise <name>``)."""
    last = handler.body[-1]
    return isinstance(last, ast.Raise) and (last.exc is None or (
        isinstance(last.exc, ast.Name) and last.exc.id == handler.name))


def _catch_alls(path: Path) -> list[tuple[str, int, str]]:
    """``(function, line, what)`` for every catch-all in ``path`` that does not re-raise."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = [*scope, child.name]
            if isinstance(child, ast.ExceptHandler) and _is_broad(child.type) and not _reraises(child):
                found.append((".".join(scope), child.lineno, ast.unparse(child.type) if child.type else "bare"))
            if isinstance(child, ast.Call) and ast.unparse(child.func).endswith("suppress") \
                    and any(_is_broad(a) for a in child.args):
                found.append((".".join(scope), child.lineno, ast.unparse(child)))
            visit(child, inner)

    visit(tree, [])
    return found


def test_catch_alls_only_at_named_boundaries() -> None:
    offenders = []
    seen = set()
    for path in sorted((REPO / "expsvc").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for function, line, what in _catch_alls(path):
            if (rel, function) in ALLOWED:
                seen.add((rel, function))
                continue
            offenders.append(f"{rel}:{line} in {function or '<module>'}: except {what}")
    assert not offenders, "catch-alls that may hide bugs (narrow them, or name a boundary):\n" + "\n".join(offenders)
    assert seen == set(ALLOWED), f"boundaries without a catch-all any more: {sorted(set(ALLOWED) - seen)}"


def test_the_audit_finds_what_it_should(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import contextlib\n"
        "def f():\n"
        "    try:\n        pass\n    except Exception:\n        return None\n"
        "    try:\n        pass\n    except:\n        pass\n"
        "    try:\n        pass\n    except (ValueError, BaseException) as err:\n        print(err)\n"
        "    with contextlib.suppress(Exception):\n        pass\n"
        "    try:\n        pass\n    except BaseException:\n        cleanup()\n        raise\n"
        "    try:\n        pass\n    except ValueError:\n        pass\n"
    )
    found = _catch_alls(sample)
    assert [line for _, line, _ in found] == [5, 9, 13, 15]
    assert all(function == "f" for function, _, _ in found)
