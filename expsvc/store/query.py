"""SQL of the read API: the ``--where`` grammar compiled to SQLAlchemy Core, ``--sort`` keys, the run listing.

The grammar (:mod:`expsvc.analysis.grammar`) parses a filter into an AST; :func:`compile_node` turns it into
a boolean expression over the ``runs`` table (correlated ``EXISTS`` for parameters, summaries and the
experiment name), with every literal a bound parameter.  Each run field of the grammar has its column in
:data:`RUN_COLUMNS` (a test checks that the two agree).  Subqueries read *aliases* of the tables they need,
so an expression stays correct inside any enclosing query, however many tables that one joins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, exists, func, not_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from expsvc.store.models import Experiment, ExperimentTag, MetricSummary, Run, RunParam

if TYPE_CHECKING:
    from expsvc.analysis.grammar import Compare, Field, InList, Like, Node

RUNS = Run.__table__.c
PARAMS = RunParam.__table__.c
SUMMARIES = MetricSummary.__table__.c
EXPERIMENTS = Experiment.__table__.c
#: the column of each run field of the grammar (``experiment`` is read through a subquery)
RUN_COLUMNS: dict[str, Any] = {
    "status": RUNS.status, "seed": RUNS.seed, "updates": RUNS.updates, "epochs": RUNS.epochs,
    "duration": RUNS.duration, "experiment": EXPERIMENTS.name, "group": RUNS.group_key, "id": RUNS.id,
    "tag": ExperimentTag.__table__.c.tag,
}
#: the time columns ``--sort`` accepts besides the grammar's fields
TIME_COLUMNS = {"started": RUNS.started_at, "created": RUNS.created_at, "ended": RUNS.ended_at}


def _match(col: Any, node: Compare | InList | Like) -> ColumnElement[bool]:
    """The condition on one column (NULL → false because callers wrap it in EXISTS or IS NOT NULL)."""
    from expsvc.analysis.grammar import COMPARATORS, Compare, InList

    if isinstance(node, Compare):
        return COMPARATORS[node.op](col, node.value.value)
    if isinstance(node, InList):
        vals = [v.value for v in node.values]
        return col.not_in(vals) if node.negated else col.in_(vals)
    cond = col.ilike(node.pattern.value, escape="\\")
    return not_(cond) if node.negated else cond


def compile_node(node: Node) -> ColumnElement[bool]:
    """A grammar AST as a boolean expression over ``runs`` (valid in any query that selects from ``runs``)."""
    from expsvc.analysis.grammar import And, Compare, Like, Not, Or

    if isinstance(node, And):
        return and_(*(compile_node(n) for n in node.items))
    if isinstance(node, Or):
        return or_(*(compile_node(n) for n in node.items))
    if isinstance(node, Not):
        return not_(compile_node(node.item))
    f = node.field
    if f.kind == "param":
        p = RunParam.__table__.alias("where_param")
        value = node.pattern if isinstance(node, Like) else (
            node.value if isinstance(node, Compare) else node.values[0])
        col = p.c.value_text if value.kind == "text" else p.c.value_num
        return exists(select(p.c.run_id).where(
            p.c.run_id == RUNS.id, p.c.key == f.key, col.is_not(None), _match(col, node)))
    if f.kind == "summary":
        s = MetricSummary.__table__.alias("where_summary")
        col = s.c[f.stat]
        return exists(select(s.c.run_id).where(
            s.c.run_id == RUNS.id, s.c.key == f.key, col.is_not(None), _match(col, node)))
    if f.key == "experiment":
        e = Experiment.__table__.alias("where_experiment")
        return exists(select(e.c.id).where(e.c.id == RUNS.experiment_id, _match(e.c.name, node)))
    if f.key == "tag":  # a set: some tag matches (=, in, like) or none does (!=, not in, not like)
        from expsvc.analysis.grammar import set_condition

        negative, positive = set_condition(node)
        t = ExperimentTag.__table__.alias("where_tag")
        found = exists(select(t.c.tag).where(t.c.experiment_id == RUNS.experiment_id, _match(t.c.tag, positive)))
        return not_(found) if negative else found
    col = RUN_COLUMNS[f.key]
    return and_(col.is_not(None), _match(col, node))


def sort_field_clauses(f: Field) -> list[ColumnElement[Any]]:
    """The ORDER BY expressions of one grammar field (parameters: numbers first, then text)."""
    if f.kind == "param":
        p = RunParam.__table__.alias("sort_param")
        return [select(p.c[c]).where(p.c.run_id == RUNS.id, p.c.key == f.key).scalar_subquery()
                for c in ("value_num", "value_text")]
    if f.kind == "summary":
        s = MetricSummary.__table__.alias("sort_summary")
        return [select(s.c[f.stat]).where(s.c.run_id == RUNS.id, s.c.key == f.key).scalar_subquery()]
    if f.key == "experiment":
        e = Experiment.__table__.alias("sort_experiment")
        return [select(e.c.name).where(e.c.id == RUNS.experiment_id).scalar_subquery()]
    if f.key == "tag":  # by the experiment's first tag
        t = ExperimentTag.__table__.alias("sort_tag")
        return [select(func.min(t.c.tag)).where(t.c.experiment_id == RUNS.experiment_id).scalar_subquery()]
    return [RUN_COLUMNS[f.key]]


def listing_query(clauses: Sequence[ColumnElement[bool]], order: Sequence[Any], limit: int | None) -> Select[Any]:
    """The single query of ``expsvc runs``: runs ⋈ experiments ⟕ the two summaries shown, newest first.

    The loss shown is ``train_loss`` (the full training set with the final parameters, compare's "final
    loss"), not the last minibatch's loss; runs that never finished have none."""
    exp = Experiment.__table__
    loss = MetricSummary.__table__.alias("listing_loss")
    acc = MetricSummary.__table__.alias("listing_accuracy")
    q = (
        select(RUNS.id, exp.c.name, RUNS.seed, RUNS.status, RUNS.error, loss.c.last, acc.c.last, RUNS.updates,
               RUNS.duration, RUNS.started_at, RUNS.created_at, RUNS.group_key)
        .join(exp, exp.c.id == RUNS.experiment_id)
        .outerjoin(loss, and_(loss.c.run_id == RUNS.id, loss.c.key == "train_loss"))
        .outerjoin(acc, and_(acc.c.run_id == RUNS.id, acc.c.key == "test_accuracy"))
        .where(*clauses)
        .order_by(*order, RUNS.created_at.desc(), RUNS.id)
    )
    if limit is not None and limit < 2**63:  # larger than any table, and than SQL's 64-bit LIMIT: no limit
        q = q.limit(limit)
    return q
