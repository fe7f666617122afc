"""Issue 11 (part a): held-out data, per-epoch evaluation and time to target.

The run options ``val_split`` and ``eval_every``: typed, validated, structural, and invisible when off.
"""

from __future__ import annotations

import pytest

from expsvc.runner.plan import structure
from expsvc.runner.spec import ExperimentSpec, RunConfig, SpecValidationError


def test_options_are_typed_and_off_by_default() -> None:
    base = ExperimentSpec.from_dict({"optimizer": "adamw"}).configs()[0]
    assert (base.val_split, base.eval_every) == (0.0, 0)
    assert "val_split" not in base.as_dict() and "eval_every" not in base.as_dict()  # stored configs unchanged
    on = ExperimentSpec.from_dict({"optimizer": "adamw", "val_split": 0.2, "eval_every": 3}).configs()[0]
    assert on.as_dict()["val_split"] == 0.2 and on.as_dict()["eval_every"] == 3
    assert RunConfig.from_dict(on.as_dict()) == on and RunConfig.from_dict(base.as_dict()) == base
    assert structure(on) != structure(base) and on.group_key != base.group_key  # they split groups


@pytest.mark.parametrize("values", [{"val_split": 1}, {"val_split": -0.1}, {"val_split": "0.2"},
                                    {"val_split": float("nan")}, {"eval_every": -1}, {"eval_every": 1.5},
                                    {"eval_every": True}])
def test_bad_values_are_one_line(values: dict[str, object]) -> None:
    with pytest.raises(SpecValidationError, match=next(iter(values))):
        ExperimentSpec.from_dict(values)
