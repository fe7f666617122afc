"""Experiments as things people name, describe, tag and annotate (``expsvc experiments``).

Store functions that return plain results: :func:`list_experiments`, :func:`describe`, and the writes
:func:`rename`, :func:`set_description`, :func:`set_tags` and :func:`add_note`.  Tags are short labels
(letters, digits, ``_ . - : /``) usable in ``--where "tag = 'baseline'"``; notes are dated free text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from expsvc.store.engine import StoreError, utcnow
from expsvc.store.models import Experiment, ExperimentNote, ExperimentTag, Run
from expsvc.store.store import RunStore

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,99}")
MAX_NAME = 200
MAX_NOTE = 10_000

_exp, _tags, _notes, _runs = (m.__table__ for m in (Experiment, ExperimentTag, ExperimentNote, Run))


@dataclass
class Note:
    """A dated note."""

    created_at: datetime
    text: str


@dataclass
class ExperimentInfo:
    """One experiment: name, description, tags, notes and its runs counted by status."""

    id: int
    name: str
    created_at: datetime
    description: str | None
    tags: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    last_run: datetime | None = None

    @property
    def runs(self) -> int:
        return sum(self.statuses.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "name": self.name, "created": self.created_at.isoformat(),
                "description": self.description, "tags": self.tags, "runs": self.runs, "statuses": self.statuses,
                "last_run": self.last_run.isoformat() if self.last_run else None,
                "notes": [{"created": n.created_at.isoformat(), "text": n.text} for n in self.notes]}


def list_experiments(store: RunStore, *, tag: str | None = None) -> list[ExperimentInfo]:
    """Every experiment (or those tagged ``tag``), oldest first, with tags, note count and run counts."""
    with store._tx(write=False) as conn:
        query = sa.select(_exp.c.id, _exp.c.name, _exp.c.created_at, _exp.c.description).order_by(
            _exp.c.created_at, _exp.c.id)
        if tag is not None:
            query = query.where(sa.exists(sa.select(_tags.c.tag).where(
                _tags.c.experiment_id == _exp.c.id, _tags.c.tag == tag)))
        infos = {row.id: ExperimentInfo(row.id, row.name, row.created_at, row.description)
                 for row in conn.execute(query)}
        for exp_id, name in conn.execute(sa.select(_tags.c.experiment_id, _tags.c.tag).order_by(_tags.c.tag)):
            if exp_id in infos:
                infos[exp_id].tags.append(name)
        counts = sa.select(_runs.c.experiment_id, _runs.c.status, sa.func.count(), sa.func.max(_runs.c.created_at)
                           ).group_by(_runs.c.experiment_id, _runs.c.status)
        for exp_id, status, n, last in conn.execute(counts):
            if exp_id in infos:
                info = infos[exp_id]
                info.statuses[status] = int(n)
                info.last_run = last if info.last_run is None or (last and last > info.last_run) else info.last_run
        notes = sa.select(_notes.c.experiment_id, _notes.c.created_at, _notes.c.text).order_by(
            _notes.c.created_at, _notes.c.id)
        for exp_id, created, text in conn.execute(notes):
            if exp_id in infos:
                infos[exp_id].notes.append(Note(created, text))
    return list(infos.values())


def describe(store: RunStore, name: str) -> ExperimentInfo:
    """One experiment (by name or id) with everything :func:`list_experiments` gives."""
    exp = store.resolve_experiment(name)
    return next(info for info in list_experiments(store) if info.id == exp.id)


def _text(value: str, what: str, limit: int) -> str:
    """``value`` stripped, or a one-line error if it is empty or longer than ``limit`` characters."""
    value = value.strip()
    if not value:
        raise StoreError(f"{what} must not be empty")
    if len(value) > limit:
        raise StoreError(f"{what} is too long ({len(value):,} characters, at most {limit:,})")
    return value


def rename(store: RunStore, old: str, new: str) -> str:
    """Rename experiment ``old`` to ``new`` (which must be free); returns the old name."""
    new = _text(new, "the new experiment name", MAX_NAME)
    exp = store.resolve_experiment(old)
    with store._tx() as conn:
        taken = conn.execute(sa.select(_exp.c.id).where(_exp.c.name == new)).scalar()
        if taken is not None and taken != exp.id:
            raise StoreError(f"an experiment named {new!r} exists already; choose another name")
        conn.execute(_exp.update().where(_exp.c.id == exp.id).values(name=new))
    return exp.name


def set_description(store: RunStore, name: str, description: str | None) -> None:
    """Set (or with None or blank text, clear) an experiment's description."""
    exp = store.resolve_experiment(name)
    text = description.strip() if description else None
    with store._tx() as conn:
        conn.execute(_exp.update().where(_exp.c.id == exp.id).values(description=text or None))


def check_tag(tag: str) -> str:
    """``tag`` if it is a valid tag, else a one-line error naming what is allowed."""
    if not TAG.fullmatch(tag):
        raise StoreError(f"tag {tag!r} is not allowed; a tag is 1-100 letters, digits or _ . - : / "
                         f"(starting with a letter, digit or _)")
    return tag


def set_tags(store: RunStore, name: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
    """Add and remove tags of an experiment; returns its tags after the change (sorted)."""
    exp = store.resolve_experiment(name)
    add = [check_tag(t) for t in dict.fromkeys(add)]
    remove = list(dict.fromkeys(remove))
    with store._tx() as conn:
        have = set(conn.execute(sa.select(_tags.c.tag).where(_tags.c.experiment_id == exp.id)).scalars())
        missing = [t for t in remove if t not in have]
        if missing:
            raise StoreError(f"experiment {exp.name!r} has no tag {missing[0]!r}"
                             + (f" (its tags: {', '.join(sorted(have))})" if have else " (it has no tags)"))
        if remove:
            conn.execute(_tags.delete().where(_tags.c.experiment_id == exp.id, _tags.c.tag.in_(remove)))
        new = [t for t in add if t not in have]
        if new:
            conn.execute(_tags.insert(), [{"experiment_id": exp.id, "tag": t} for t in new])
    return sorted((have - set(remove)) | set(add))


def add_note(store: RunStore, name: str, text: str) -> Note:
    """Add a dated note to an experiment."""
    text = _text(text, "a note", MAX_NOTE)
    exp = store.resolve_experiment(name)
    note = Note(utcnow(), text)
    with store._tx() as conn:
        conn.execute(_notes.insert().values(experiment_id=exp.id, created_at=note.created_at, text=text))
    return note
