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
