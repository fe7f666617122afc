"""The stored vocabulary (:mod:`expsvc.store.vocab`): one parameter encoding, read back the same by every reader
(NaN included: two decoders once disagreed on it), and the statuses and summary columns the schema and the
readers share."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expsvc.store import RunStore, read
from expsvc.store.models import MetricSummary
from expsvc.store.store import NewRun
from expsvc.store.vocab import FILTER_STATUSES, STATUSES, SUMMARY_FIELDS, decode_param, encode_param

VALUES: list[Any] = [None, True, False, np.bool_(True), 0, -3, 2**40, 0.01, -1e-300, 1e300, math.inf, -math.inf,
                     math.nan, "adam", "", "lin(5), tanh", np.int64(7), np.float32(0.5)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


def _python(v: Any) -> Any:
    """The Python value a parameter reads back as (numpy scalars become Python ones)."""
    return v.item() if isinstance(v, np.generic) else v


@pytest.mark.parametrize("value", VALUES, ids=[repr(v) for v in VALUES])
def test_encode_decode_round_trip(value: Any) -> None:
    assert _same(decode_param(*encode_param(value)), _python(value))


def test_every_reader_decodes_the_store_the_same_way(tmp_path: Path) -> None:
    """Parameters written by the store read back identically through the store and the read API."""
    url = f"sqlite:///{tmp_path / 'v.db'}"
    params = {f"p{i}": v for i, v in enumerate(VALUES) if v is not None}
    with RunStore.open(url) as store:
        exp = store.get_or_create_experiment("v")
        (run_id,) = store.create_runs(exp, [NewRun(0, "g", {"seed": 0}, params)])
        via_store = store.params([run_id])[run_id]
        via_read = read.records(store, run_ids=[run_id])[0].params
        via_listing = read.runs(store)[0].params
    for key, value in params.items():
        for got in (via_store[key], via_read[key], via_listing[key]):
            assert _same(got, _python(value)), (key, value, got)


def test_the_schema_and_the_vocabulary_agree() -> None:
    assert tuple(c.name for c in MetricSummary.__table__.columns if c.name in SUMMARY_FIELDS) == SUMMARY_FIELDS
    assert set(SUMMARY_FIELDS) == {c.name for c in MetricSummary.__table__.columns} - {"run_id", "key"}
    assert FILTER_STATUSES[: len(STATUSES)] == STATUSES
