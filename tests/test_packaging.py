"""The wheel must contain every package of the source tree (an unlisted package breaks installed copies)."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = config.get("package-dir", {})
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "expsvc").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    on_disk |= {name for name, folder in mapped.items() if (REPO / folder / "__init__.py").is_file()}
    assert on_disk <= listed, f"missing from [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert listed <= on_disk, f"listed but absent: {sorted(listed - on_disk)}"


DECLARED = {"numpy", "pluggy", "sqlalchemy", "alembic", "matplotlib", "typer", "scipy",
            "rich"}  # rich comes with typer
OPTIONAL = {"psycopg", "dask", "distributed", "sklearn"}  # extras: expsvc[postgres], expsvc[dask], expsvc[datasets]


def test_imports_are_stdlib_or_declared_dependencies() -> None:
    """A module imported by expsvc but only present here by accident (say click, pulled in by another package)
    would break a clean install."""
    import ast
    import sys

    allowed = set(sys.stdlib_module_names) | DECLARED | OPTIONAL | {"expsvc"}
    offenders = []
    for path in list((REPO / "expsvc").rglob("*.py")) + list((REPO / "migrations").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert not offenders, offenders
