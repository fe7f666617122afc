"""Studies (``expsvc tune``) as stored units: plain results, never sessions.

A study row links its tuning and its confirmation experiment and holds its definition (``spec``), the
selection rule in words and each optimizer's choice.  :func:`create_study`, :func:`link`,
:func:`set_selection` and :func:`finish_study` write; :func:`get_study` and :func:`list_studies` read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from expsvc.errors import did_you_mean
from expsvc.store.engine import StoreError, as_utc, utcnow
from expsvc.store.models import Experiment, Study
from expsvc.store.store import RunStore

STUDY_STATUSES = ("tuning", "confirming", "done")
_studies, _exp = Study.__table__, Experiment.__table__


@dataclass
class StudyRecord:
    """One stored study with the names of its experiments."""

    id: int
    name: str
    created_at: datetime
    status: str
    spec: dict[str, Any]
    tuning_experiment: str | None
    confirmation_experiment: str | None
    rule: str | None
    selection: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "created": self.created_at.isoformat(), "status": self.status,
                "spec": self.spec, "tuning_experiment": self.tuning_experiment,
                "confirmation_experiment": self.confirmation_experiment, "rule": self.rule,
                "selection": self.selection}


def _query() -> sa.Select[Any]:
    tuning, confirmation = _exp.alias("tuning"), _exp.alias("confirmation")
    return (sa.select(_studies, tuning.c.name.label("tuning_name"), confirmation.c.name.label("confirmation_name"))
            .outerjoin(tuning, tuning.c.id == _studies.c.tuning_experiment_id)
            .outerjoin(confirmation, confirmation.c.id == _studies.c.confirmation_experiment_id)
            .order_by(_studies.c.created_at, _studies.c.id))


def _record(row: Any) -> StudyRecord:
    return StudyRecord(row.id, row.name, as_utc(row.created_at), row.status, dict(row.spec), row.tuning_name,
                       row.confirmation_name, row.rule, None if row.selection is None else dict(row.selection))


def list_studies(store: RunStore) -> list[StudyRecord]:
    """Every study, oldest first."""
    with store.reading() as conn:
        return [_record(r) for r in conn.execute(_query())]


def find_study(store: RunStore, name: str) -> StudyRecord | None:
    """The study named ``name``, or None."""
    with store.reading() as conn:
        row = conn.execute(_query().where(_studies.c.name == name)).first()
    return None if row is None else _record(row)


def get_study(store: RunStore, name: str) -> StudyRecord:
    """The study named ``name``; a one-line error naming the known studies if there is none."""
    found = find_study(store, name)
    if found is None:
        known = [s.name for s in list_studies(store)]
        raise StoreError(f"no study named {name!r}{did_you_mean(name, known)}; "
                         + (f"known: {', '.join(known)}" if known else "the store holds no study (expsvc tune)"))
    return found


def create_study(store: RunStore, name: str, spec: dict[str, Any], rule: str) -> None:
    """Record a new study (status ``tuning``); its experiments are linked once they exist (:func:`link`)."""
    with store._tx() as conn:
        if conn.execute(sa.select(_studies.c.id).where(_studies.c.name == name)).first() is not None:
            raise StoreError(f"a study named {name!r} exists already; resume it with --resume {name} or choose "
                             f"another --name")
        for role in ("tuning", "confirmation"):
            if conn.execute(sa.select(_exp.c.id).where(_exp.c.name == f"{name}-{role}")).first() is not None:
                raise StoreError(f"an experiment named {name}-{role!s} exists already; choose another study --name")
        conn.execute(_studies.insert().values(name=name, created_at=utcnow(), status="tuning", spec=spec,
                                              rule=rule))


def link(store: RunStore, name: str, role: str, experiment: str) -> None:
    """Link the experiment named ``experiment`` as the study's ``tuning`` or ``confirmation`` experiment (a
    no-op while that experiment does not exist yet)."""
    column = {"tuning": "tuning_experiment_id", "confirmation": "confirmation_experiment_id"}[role]
    with store._tx() as conn:
        exp_id = conn.execute(sa.select(_exp.c.id).where(_exp.c.name == experiment)).scalar()
        if exp_id is not None:
            conn.execute(_studies.update().where(_studies.c.name == name).values({column: exp_id}))


def set_selection(store: RunStore, name: str, selection: dict[str, Any]) -> None:
    """Store each optimizer's choice once tuning is complete (status ``confirming``)."""
    with store._tx() as conn:
        conn.execute(_studies.update().where(_studies.c.name == name).values(selection=selection,
                                                                             status="confirming"))


def finish_study(store: RunStore, name: str) -> None:
    """Mark the study ``done`` (every confirmation run ended)."""
    with store._tx() as conn:
        conn.execute(_studies.update().where(_studies.c.name == name).values(status="done"))


__all__ = ["STUDY_STATUSES", "StudyRecord", "create_study", "find_study", "finish_study", "get_study",
           "link", "list_studies", "set_selection"]
