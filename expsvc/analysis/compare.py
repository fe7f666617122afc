"""``expsvc compare``: group the runs of an experiment and compare every group with a baseline.

Statistics are computed over the *finished* runs of each group; diverged, failed and unfinished runs are
counted and shown next to them, never folded into the numbers.  See :data:`METHOD` for the printed method.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from expsvc.analysis import stats
from expsvc.analysis.grammar import RUN_FIELDS, Field, GrammarError, metric_key, parse_field
from expsvc.analysis.keys import (
    LABEL_ORDER,
    NOT_LABELS,
    fmt_value,
)
from expsvc.errors import ExpsvcError, did_you_mean
from expsvc.store.read import RunRecord
from expsvc.store.vocab import COMPLETED, LOSS_KEY, SECONDS_KEY, is_epoch_key

LOWER_WORDS = ("loss", "mse", "mae", "rmse", "error", "updates", "epochs", "duration", "time", "nll")
HIGHER_WORDS = ("accuracy", "precision", "recall", "f1", "auc", "r2", "score")
#: parameters that are never a setting of their own: derived from others (the spec text from the optimizer
#: and its resolved arguments; ``optimizer.lr`` is the resolved ``lr``)
DERIVED_PARAMS = ("optimizer_spec", "optimizer.lr")


class CompareError(ExpsvcError):
    """A bad ``compare`` request (unknown metric, unknown baseline, no runs, an ill-defined grouping...)."""


# ------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Metric:
    """A quantity compared across groups: a summary statistic or a numeric run column.

    ``definition`` says in words what is measured (printed under the tables, kept in the JSON).  A metric
    with ``censoring`` is *right-censored* for runs that never reached the event it counts: "updates to
    converge" of a run stopped by the epoch limit is at least its updates, not a measured value.
    """

    label: str
    field: Field
    lower_is_better: bool
    verb: str = "reached a"
    better: str = ""
    worse: str = ""
    definition: str = ""
    censoring: str = ""  # "converged": censored for runs with converged != True; "target": see ``measured``
    measured: Mapping[str, tuple[float, bool]] | None = field(default=None, compare=False, repr=False)
    """Per run id, a value measured outside the summaries and whether it is censored (time to a target,
    :func:`target_metrics`); None: the value is read from the run."""

    def value(self, run: RunRecord) -> float | None:
        """This metric of ``run``; ``None`` when missing or not finite."""
        if self.measured is not None:
            got = self.measured.get(run.id)
            return None if got is None or not math.isfinite(got[0]) else got[0]
        if self.field.kind == "summary":
            raw = run.summaries.get(self.field.key, {}).get(self.field.stat)
        else:
            raw = getattr(run, self.field.key, None)
        if raw is None:
            return None
        v = float(raw)
        return v if math.isfinite(v) else None

    def censored(self, run: RunRecord) -> bool:
        """Whether ``run``'s value is only a lower bound (the event never happened)."""
        if self.measured is not None:
            return self.measured.get(run.id, (0.0, False))[1]
        return self.censoring == "converged" and run.converged is not True

    @property
    def event(self) -> str:
        """What a censored run never did, for warnings: ``converged``, ``reached val_loss <= 0.3``."""
        return "converged" if self.censoring == "converged" else f"reached {self.censoring.removeprefix('target ')}"

    @property
    def spec(self) -> str:
        return str(self.field)


def _direction(key: str) -> bool:
    """Lower is better for losses, errors, updates and time; higher for accuracy-like scores."""
    k = key.lower()
    return not any(w in k for w in HIGHER_WORDS)


DEFINITIONS = {
    ("summary", "train_loss", "last"): "the loss on the full training set with the final parameters, evaluated "
                                       "once after training",
    ("summary", "loss", "last"): "the loss of the last minibatch trained on (a few samples: noisy)",
    ("summary", "loss", "min"): "the lowest per-step minibatch loss during training",
    ("run", "updates", ""): "optimizer updates until the tolerance rule stopped the run; runs that never "
                            "converged are censored (at least their updates)",
    ("run", "epochs", ""): "epochs started until the run stopped",
    ("run", "duration", ""): "wall time from the start of the run's group until the run stopped; replicas "
                             "trained together in one vectorised group share that computation, so their "
                             "times are not independent measurements",
}


def make_metric(field_: Field, label: str | None = None, lower_is_better: bool | None = None) -> Metric:
    """A :class:`Metric` for ``field_`` with its label, direction, definition and the words of its sentence."""
    lower = _direction(field_.key) if lower_is_better is None else lower_is_better
    if label is None:
        if field_.kind == "summary" and field_.key == "train_loss" and field_.stat == "last":
            label = "final loss"
        elif field_.kind == "summary" and field_.key == "loss" and field_.stat in ("last", "min"):
            label = "last batch loss" if field_.stat == "last" else "min loss"
        elif field_.kind == "summary" and is_epoch_key(field_.key) and (
                field_.stat in ("min", "max") or (field_.stat == "last" and field_.key.startswith("val_"))):
            # "final" vs "best epoch" said in the label (test_/train_ keep their older labels, "test accuracy":
            # the final value, as their definitions say)
            which = "final" if field_.stat == "last" else f"best-epoch ({field_.stat})"
            label = f"{which} {field_.key.replace('_', ' ')}"
        elif field_.kind == "summary" and field_.stat == "last":
            label = field_.key.replace("_", " ")
        else:
            label = str(field_)
    words = ("lower", "higher") if lower else ("higher", "lower")
    verb = "reached a"
    censoring = ""
    if field_.kind == "run" and field_.key in ("updates", "epochs"):
        verb, words = "needed", (("fewer", "more") if lower else ("more", "fewer"))
        censoring = "converged" if field_.key == "updates" else ""
    elif field_.kind == "run" and field_.key == "duration":
        verb, words = "took", (("less", "more") if lower else ("more", "less"))
    definition = DEFINITIONS.get((field_.kind, field_.key, field_.stat if field_.kind == "summary" else ""), "")
    if not definition and field_.kind == "summary" and is_epoch_key(field_.key) and field_.key != SECONDS_KEY:
        split, _, name = field_.key.partition("_")
        where = {"val": "validation", "train": "full training", "test": "test"}.get(split, split)
        definition = (f"{name} on the {where} set with the final parameters (evaluated after training; the last "
                      f"point of its per-epoch history with --eval-every)" if field_.stat == "last" else
                      f"the {field_.stat} of {name} on the {where} set over the evaluated epochs (the best epoch, "
                      f"chosen after the fact: optimistic for test data; select on validation)"
                      if field_.stat in ("min", "max") else
                      f"the {field_.stat} of {name} on the {where} set over the evaluated epochs")
    if not definition and field_.kind == "summary":
        stat = "last logged value" if field_.stat == "last" else f"{field_.stat} over the logged values"
        definition = f"the {stat} of {field_.key}"
    return Metric(label, field_, lower, verb, *words, definition=definition, censoring=censoring)


#: The default comparison.  "final loss" is the full-training-set loss after training (not the last
#: minibatch's: with batch 32 and 200 points that is 8 samples).  Duration is not a default: within a
#: vectorised group the replicas' times are one shared computation (see :data:`DEFINITIONS`).
DEFAULT_METRICS: tuple[Metric, ...] = (
    make_metric(Field("summary", "train_loss", "last"), "final loss"),
    make_metric(Field("summary", "loss", "min"), "min loss"),
    make_metric(Field("summary", "test_accuracy", "last"), "test accuracy"),
    make_metric(Field("run", "updates"), "updates to converge"),
)
_ALIASES = {"final_loss": Field("summary", "train_loss", "last"), "min_loss": Field("summary", "loss", "min"),
            "last_batch_loss": Field("summary", "loss", "last")}


def parse_metric(text: str) -> Metric:
    """Parse ``--metric``: a summary key (``test_f1``, ``accuracy`` = test accuracy), ``min(loss)``,
    ``metrics.KEY``, ``final_loss`` (full training set)/``last_batch_loss``/``min_loss``,
    ``updates``/``epochs``/``duration``; an optional ``:lower``/``:higher`` suffix overrides the direction."""
    spec, _, direction = text.strip().partition(":")
    lower: bool | None = None
    if direction:
        if direction not in ("lower", "higher"):
            raise CompareError(f"metric direction {direction!r} in {text!r}: use ':lower' or ':higher'")
        lower = direction == "lower"
    if spec in _ALIASES:
        return make_metric(_ALIASES[spec], lower_is_better=lower)
    try:
        f = parse_field(spec)
    except GrammarError as err:
        if spec.isidentifier() and spec.lower() not in RUN_FIELDS:
            f = Field("summary", metric_key(spec), "last")
        else:
            raise CompareError(f"bad metric {text!r}: {err.message}") from err
    if f.kind == "param":
        raise CompareError(f"--metric {text!r} is a parameter; compare metrics (e.g. test_accuracy, min(loss))")
    if f.kind == "run" and (RUN_FIELDS[f.key] != "num" or f.key == "seed"):
        raise CompareError(f"--metric {text!r} is not a numeric result; use updates, epochs, duration or a metric")
    return make_metric(f, lower_is_better=lower)


# --------------------------------------------------------------------------------------- time to target
_TARGET = re.compile(r"\s*(?:metrics\.)?([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*(\S+)\s*")
TARGET_HELP = "METRIC <= NUMBER or METRIC >= NUMBER with a stored history, e.g. 'val_loss <= 0.3'"


@dataclass(frozen=True)
class Target:
    """``compare --target "val_loss <= 0.3"``: a threshold on a stored history."""

    key: str
    op: str  # "<=" or ">="
    threshold: float

    def __str__(self) -> str:
        return f"{self.key[:100]} {self.op} {self.threshold:g}"

    def first(self, values: Sequence[float]) -> int | None:
        """The index of the first value where the target holds (NaN never holds), or None."""
        for i, v in enumerate(values):
            if (v <= self.threshold) if self.op == "<=" else (v >= self.threshold):
                return i
        return None


def parse_target(text: str) -> Target:
    """Parse ``--target``; a malformed one is a :class:`CompareError` naming what is allowed."""
    found = _TARGET.fullmatch(text)
    threshold = math.nan
    if found:
        with contextlib.suppress(ValueError):
            threshold = float(found.group(3))
    if not found or not math.isfinite(threshold):
        raise CompareError(f"--target {text[:200]!r} is not a target; expected {TARGET_HELP}")
    return Target(found.group(1), found.group(2), threshold)


#: what each time-to-target metric counts: (label word, run column for a censored run, definition)
TARGET_MEASURES = (
    ("updates", "updates", "optimizer updates until the first evaluation where the target holds (a per-epoch "
                           "history: the epoch × updates per epoch)"),
    ("epochs", "epochs", "epochs until the first evaluation where the target holds (a per-step history: the "
                         "epochs completed at that update)"),
    ("seconds", "duration", "wall seconds from the start of training until the first evaluation where the target "
                            "holds (a per-epoch history: the time recorded at that evaluation; a per-step history: "
                            "the run's duration × update / updates, an estimate); replicas of one vectorised group "
                            "share that computation"),
)


def time_to_target(run: RunRecord, steps: Sequence[int], values: Sequence[float], target: Target,
                   seconds: Mapping[int, float]) -> tuple[tuple[float, float, float], bool] | None:
    """``((updates, epochs, seconds), censored)`` of one run: where ``target`` first holds in its history
    ``(steps, values)`` — or, when it never does, the run's own totals as lower bounds (censored).  None for a
    run without that history.  ``seconds`` maps an epoch to its evaluation time (per-epoch histories)."""
    if not len(steps):
        return None
    per_epoch = run.steps_per_epoch or 0
    i = target.first(values)
    if i is None:
        nan = math.nan
        return (float(run.updates if run.updates is not None else nan),
                float(run.epochs if run.epochs is not None else nan),
                float(run.duration if run.duration is not None else nan)), True
    step = int(steps[i])
    if is_epoch_key(target.key):
        return (float(step * per_epoch) if per_epoch else math.nan, float(step), seconds.get(step, math.nan)), False
    epochs = float(step // per_epoch) if per_epoch else math.nan
    share = run.duration * step / run.updates if run.duration is not None and run.updates else math.nan
    return (float(step), epochs, share), False


def target_metrics(store: Any, runs: Sequence[RunRecord], target: Target, known: Sequence[str]) -> list[Metric]:
    """The time-to-target metrics (updates, epochs, seconds) of ``runs``, censored where never reached.

    Refuses, in one line, a metric no run has, and one stored only as a final value (no history to search)."""
    if target.key not in known:
        raise CompareError(f"--target {str(target)!r}: no run of this experiment has the metric {target.key[:100]!r}"
                           f"{did_you_mean(target.key, known)}; known: {', '.join(known)}")
    ids = [r.id for r in runs]
    histories = store.histories(ids, target.key)
    if not any(len(steps) > 1 or (len(steps) == 1 and target.key == LOSS_KEY) for steps, _ in histories.values()):
        raise CompareError(f"--target {str(target)!r}: {target.key!r} is stored only as a final value, not as a "
                           f"history to search; run with --eval-every N for per-epoch {target.key}, or use loss")
    times = store.histories(ids, SECONDS_KEY) if is_epoch_key(target.key) else {}
    measured: list[dict[str, tuple[float, bool]]] = [{}, {}, {}]
    for r in runs:
        steps, values = histories.get(r.id, ((), ()))
        t_steps, t_values = times.get(r.id, ((), ()))
        got = time_to_target(r, list(steps), list(values), target,
                             dict(zip((int(s) for s in t_steps), (float(v) for v in t_values), strict=True)))
        if got is not None:
            for i, value in enumerate(got[0]):
                measured[i][r.id] = (value, got[1])
    out = []
    for (word, column, definition), values in zip(TARGET_MEASURES, measured, strict=True):
        base = make_metric(Field("run", column), f"{word} to {target}", lower_is_better=True)
        out.append(replace(base, definition=f"{definition}; a run that never reaches it is censored at its total "
                                            f"(at least that many)", censoring=f"target {target}",
                           measured=values))
    return out


# ------------------------------------------------------------------------------------ resolved settings
@cache
def component_defaults(kind: str, name: str) -> dict[str, Any]:
    """The keyword defaults of the installed component ``name`` (empty when it is not installed)."""
    from expsvc.plugins import get_system

    try:
        cls = get_system().registry.resolve(kind, name).cls
        params = inspect.signature(cls.__init__).parameters.values()
    except (ExpsvcError, TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params
            if p.name != "self" and p.default is not inspect.Parameter.empty
            and (p.default is None or isinstance(p.default, bool | int | float | str))}


def resolve_params(runs: Sequence[RunRecord],
                   defaults: Callable[[str, str], dict[str, Any]] = component_defaults, *,
                   spec_baseline: bool = False) -> None:
    """Give every run the resolved value of each optimizer argument (``optimizer.momentum = 0.0`` where the
    spec left it to the default), so labels and ``--baseline`` speak of what ran, never of ``None``.

    Runs that set no optimizer argument all ran their optimizer's defaults, which the optimizer's name
    already tells apart, so the plugin system (a few hundred ms) is loaded only when some run set one or
    the baseline is given as a spec (``spec_baseline``).
    """
    if not spec_baseline and not any(k.startswith("optimizer.") for r in runs for k in r.params):
        return
    for r in runs:
        name = r.params.get("optimizer")
        if not isinstance(name, str):
            continue
        for arg, value in defaults("optimizer", name).items():
            if arg != "lr":
                r.params.setdefault(f"optimizer.{arg}", value)


def _settings(params: dict[str, Any]) -> dict[str, Any]:
    """A configuration's settings: its parameters without the seed and the derived keys."""
    return {k: v for k, v in params.items() if k not in NOT_LABELS and k not in DERIVED_PARAMS}


def _same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)


def differing(configs: Sequence[dict[str, Any]], *, absent_differs: bool = True) -> dict[str, list[Any]]:
    """The settings whose values differ between ``configs`` → their distinct values (absent: ``None``).

    With ``absent_differs=False`` a setting some configurations lack (``momentum`` next to ``adam``, whose
    name already tells it apart) differs only if the configurations that have it disagree.
    """
    keys = sorted({k for c in configs for k in c})
    out: dict[str, list[Any]] = {}
    for k in keys:
        values: list[Any] = []
        for c in configs:
            v = c.get(k)
            if v is None and not absent_differs:
                continue
            if not any(_same(v, u) for u in values):
                values.append(v)
        if len(values) > 1:
            out[k] = values
    return out


def _order(keys: Sequence[str]) -> list[str]:
    return sorted(keys, key=lambda k: (LABEL_ORDER.index(k) if k in LABEL_ORDER else len(LABEL_ORDER), k))


def _fmt_values(values: Sequence[Any], most: int = 6) -> str:
    shown = [fmt_value(v) if v is not None else "(unset)" for v in values]
    with contextlib.suppress(TypeError):  # values of mixed types keep their order
        shown = [fmt_value(v) for v in sorted(values)] if None not in values else shown
    return ", ".join(shown[:most]) + (f", … ({len(shown)} values)" if len(shown) > most else "")


# -------------------------------------------------------------------------------------------- groups
@dataclass
class Group:
    """Runs sharing a configuration (without the seed) or the values of the ``--by`` parameters.

    ``merged`` lists the settings (and versions) that differ *within* the group: empty when the group is one
    configuration run with one set of versions.
    """

    label: str
    short: str
    values: dict[str, Any]
    runs: list[RunRecord]
    merged: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def completed(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == COMPLETED]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def configurations(self) -> int:
        return len({r.group_key for r in self.runs})

    @property
    def duplicate_seeds(self) -> list[int]:
        """Seeds run more than once in the same configuration of this group."""
        seen: dict[tuple[str, int], int] = {}
        for r in self.runs:
            seen[(r.group_key, r.seed)] = seen.get((r.group_key, r.seed), 0) + 1
        return sorted({seed for (_, seed), n in seen.items() if n > 1})

    @property
    def versions(self) -> dict[str, list[str]]:
        """What produced the group's runs → the distinct versions."""
        out: dict[str, list[str]] = {}
        for r in self.runs:
            for k, v in r.versions.items():
                if v not in out.setdefault(k, []):
                    out[k].append(v)
        return out


def _label(values: dict[str, Any]) -> tuple[str, str]:
    shown = {k: v for k, v in values.items() if v is not None}
    if not shown:
        return "(all runs)", "(all runs)"
    label = ", ".join(f"{k}={fmt_value(v)}" for k, v in shown.items())
    if len(shown) == 1:
        return label, fmt_value(next(iter(shown.values())))
    first, *rest = shown
    if first == "optimizer":  # "sgd, momentum=0.9, lr=0.01": the optimizer's name speaks for itself
        return label, ", ".join([fmt_value(shown[first]), *(f"{k.removeprefix('optimizer.')}={fmt_value(shown[k])}"
                                                            for k in rest)])
    return label, label


def _version_keys(runs: Sequence[RunRecord]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in runs:
        for k, v in r.versions.items():
            if v not in out.setdefault(k, []):
                out[k].append(v)
    return {f"{k} version": v for k, v in out.items() if len(v) > 1}


def group_runs(runs: Sequence[RunRecord], by: Sequence[str] | None = None) -> list[Group]:
    """Group runs by configuration (``group_key``) or by the ``--by`` settings.

    Labels show exactly the settings that differ between the groups, with resolved values (call
    :func:`resolve_params` first); each group records what differs *within* it (``Group.merged``).
    ``--by experiment`` groups by experiment name.
    """
    if not runs:
        return []
    buckets: dict[Hashable, list[RunRecord]] = {}
    if by:
        known = sorted({k for r in runs for k in r.params} | {"experiment"})
        for key in by:
            if key not in known:
                raise CompareError(
                    f"--by {key!r} is not a parameter of these runs{did_you_mean(key, known)}; "
                    f"known: {', '.join(known)}")

        def value(r: RunRecord, k: str) -> Any:
            return r.experiment if k == "experiment" else r.params.get(k)

        for r in runs:
            buckets.setdefault(tuple(repr(value(r, k)) for k in by), []).append(r)
        label_values = [{k: value(members[0], k) for k in by} for members in buckets.values()]
    else:
        for r in runs:
            buckets.setdefault(r.group_key, []).append(r)
        configs = [_settings(members[0].params) for members in buckets.values()]
        diff = _order(list(differing(configs, absent_differs=False)))
        if diff:
            label_values = [{k: c.get(k) for k in diff} for c in configs]
        elif len(buckets) == 1 and "optimizer" in configs[0]:
            label_values = [{"optimizer": configs[0]["optimizer"]}]
        else:
            label_values = [{"group": key} for key in buckets]
    groups = []
    for vals, members in zip(label_values, buckets.values(), strict=True):
        inner = differing([_settings(r.params) for r in {r.group_key: r for r in members}.values()])
        merged = {k: inner[k] for k in _order(list(inner)) if k not in (by or ())}
        merged.update(_version_keys(members))
        groups.append(Group(*_label(vals), vals, members, merged))
    return groups


def _spec_filter(ref: str) -> dict[str, Any] | None:
    """``adamw(lr=0.001)`` or ``optimizer=sgd, lr=0.1`` as wanted settings (resolved names), else None."""
    from expsvc.specs import parse

    if "=" in ref and "(" not in ref:
        wanted: dict[str, Any] = {}
        for part in ref.split(","):
            k, sep, v = part.partition("=")
            if not sep:
                return None
            wanted[k.strip()] = _literal(v.strip())
        return wanted
    try:
        spec = parse(ref, "optimizer")
    except ExpsvcError:
        return None
    if spec.args:
        return None
    wanted = {"optimizer": spec.name}
    for k, v in spec.kwargs.items():
        wanted["lr" if k == "lr" else f"optimizer.{k}"] = v
    return wanted


def _literal(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text.strip("'\""))


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted or value == wanted
    if isinstance(value, int | float) and isinstance(wanted, int | float):
        return math.isclose(float(value), float(wanted), rel_tol=1e-12, abs_tol=0.0)
    return str(value) == str(wanted)


def find_baseline(groups: Sequence[Group], ref: str | None) -> int:
    """Index of the baseline group: ``ref`` is a label, a short name, a value (``mini_bgd``), settings
    (``lr=0.1, optimizer=sgd``) or an optimizer spec (``adamw(lr=0.001)``), matched against each group's
    resolved settings (a group matches when every setting the reference names has that value)."""
    if ref is None:
        return 0
    ref = ref.strip()
    tests: list[Callable[[Group], bool]] = [
        lambda g: g.label == ref or g.short == ref,
        lambda g: ref in [fmt_value(v) for v in g.values.values()] or ref in g.label.split(", "),
    ]
    wanted = _spec_filter(ref)
    if wanted:
        def spec_test(g: Group) -> bool:
            settings = {**_settings(g.runs[0].params), **g.values}
            return all(k in settings and _matches(settings[k], v) for k, v in wanted.items()) and all(
                all(k not in _settings(r.params) or _matches(_settings(r.params)[k], v) for r in g.runs)
                for k, v in wanted.items())
        tests.append(spec_test)
    for test in tests:
        hits = [i for i, g in enumerate(groups) if test(g)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise CompareError(f"--baseline {ref!r} matches several groups: "
                               f"{'; '.join(groups[i].label for i in hits)}; give the full label")
    labels = [g.label for g in groups]
    shorts = [g.short for g in groups]
    raise CompareError(f"--baseline {ref!r} matches no group{did_you_mean(ref, labels + shorts)}; "
                       f"groups: {'; '.join(labels)}")


def check_grouping(groups: Sequence[Group], by: Sequence[str] | None, pool: bool) -> None:
    """Refuse groups that merge configurations (or versions) unless ``pool``: name what differs.

    A group stands for the replicas of one configuration, differing only in the seed.  Runs made by
    different versions of expsvc, numpy or a plugin may compute differently, so inside a group they are
    treated like different settings: seed ``s`` under one version is not a replay of seed ``s`` under
    another, and pairing or pooling them silently would hide a variable.  Between groups, each made by one
    set of versions, the comparison is well defined (comparing two plugin releases may be the question), so
    it is allowed and the versions are named in the warnings.
    """
    if pool:
        return
    merged = [g for g in groups if g.merged]
    if not merged:
        return
    keys = _order(list(dict.fromkeys(k for g in merged for k in g.merged)))
    what = "; ".join(f"{g.short}: " + ", ".join(f"{k} ({_fmt_values(v)})" for k, v in g.merged.items())
                     for g in merged[:3]) + ("; …" if len(merged) > 3 else "")
    settings = [k for k in keys if not k.endswith(" version")]
    hint = []
    if settings and by:
        hint.append(f"add them to --by (--by {','.join([*by, *settings])})")
    if settings:
        hint.append("narrow the runs with --where")
    hint.append("or pass --pool to pool them (runs treated as independent samples, no pairing by seed)")
    grouping = f"--by {','.join(by)}" if by else "grouping by configuration"
    raise CompareError(f"{grouping} puts runs that differ in {', '.join(keys)} into one group ({what}); "
                       f"comparing them as one would be misleading: {'; '.join(hint)}")


# ------------------------------------------------------------------------------------------- compare
@dataclass
class GroupResult:
    """One group's counts, per-metric summaries and comparison with the baseline."""

    label: str
    short: str
    n_expected: int
    n_completed: int
    n_diverged: int
    n_failed: int
    n_unfinished: int  # queued, running or interrupted
    seeds: list[int]
    is_baseline: bool
    summaries: dict[str, stats.Summary]
    comparisons: dict[str, stats.Comparison | None]
    sentences: dict[str, str]
    configurations: int = 1
    merged: dict[str, list[Any]] = field(default_factory=dict)
    duplicate_seeds: list[int] = field(default_factory=list)
    versions: dict[str, list[str]] = field(default_factory=dict)
    censored: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the same numbers the table shows, at full precision."""
        return {
            "label": self.label, "name": self.short, "baseline": self.is_baseline,
            "n_expected": self.n_expected, "n_completed": self.n_completed, "n_diverged": self.n_diverged,
            "n_failed": self.n_failed, "n_unfinished": self.n_unfinished, "seeds": self.seeds,
            "configurations": self.configurations, "pooled": bool(self.merged),
            "merged_settings": {k: [_json_value(v) for v in vals] for k, vals in self.merged.items()},
            "duplicate_seeds": self.duplicate_seeds, "versions": self.versions, "warnings": self.warnings,
            "metrics": {
                k: {**s.to_dict(), "n_censored": self.censored.get(k, 0),
                    "vs_baseline": (None if self.comparisons.get(k) is None
                                    else self.comparisons[k].to_dict()),  # type: ignore[union-attr]
                    "sentence": self.sentences.get(k)}
                for k, s in self.summaries.items()
            },
        }


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass
class CompareResult:
    """Everything ``compare`` prints, in every format.

    ``to_dict()`` is the documented, stable JSON of ``compare --format json`` (fields are added, never
    renamed)::

        experiment        str: the experiment name (several: joined with ", ")
        experiments       [str]: every experiment compared
        baseline          str: the baseline group's label
        confidence        float (0.95); bootstrap_seed: int
        pooled            bool: --pool was given and some group merges configurations
        warnings          [str]: what makes the comparison less than clean (pooling, duplicated seeds,
                          mixed versions, censored values, timing caveats), also printed with the table
        metrics           [{label, field, better: "lower"|"higher", definition, censoring}]
        target            str | null: ``--target`` ("val_loss <= 0.3"); its metrics have censoring "target ..."
                          and each group's entry for them ``n_reached`` (of ``n`` finished runs)
        groups            [{label, name, baseline, n_expected, n_completed, n_diverged, n_failed,
                            n_unfinished, seeds, configurations, pooled, merged_settings {setting: [values]},
                            duplicate_seeds [int], versions {what: [versions]}, warnings [str],
                            metrics {label: {n, mean, ci, std, median, iqm, iqm_low, iqm_high, min, max,
                                             n_censored, vs_baseline: null | {method, n, n_baseline,
                                             n_candidate, diff, ci, low, high, p, prob_better, wins,
                                             losses, note}, sentence}}}]
        method            [str]: the printed method

    Undefined numbers are ``null``.  A metric whose group has censored values has ``mean`` … ``max``
    ``null`` (no honest mean exists) and ``n_censored`` > 0.
    """

    experiment: str
    baseline: str
    metrics: list[Metric]
    groups: list[GroupResult]
    bootstrap_seed: int
    confidence: float = stats.CONFIDENCE
    warnings: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)
    target: str | None = None

    @property
    def method(self) -> list[str]:
        return method_lines(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole comparison (the shape is documented in the class docstring)."""
        return {
            "experiment": self.experiment, "experiments": self.experiments or [self.experiment],
            "baseline": self.baseline, "confidence": self.confidence,
            "bootstrap_seed": self.bootstrap_seed, "pooled": any(g.merged for g in self.groups),
            "warnings": self.warnings,
            "metrics": [{"label": m.label, "field": m.spec, "better": "lower" if m.lower_is_better else "higher",
                         "definition": m.definition, "censoring": m.censoring or None} for m in self.metrics],
            "target": self.target,
            "groups": [_with_reached(g.to_dict(), self.metrics) for g in self.groups],
            "method": self.method,
        }


def _with_reached(group: dict[str, Any], metrics: Sequence[Metric]) -> dict[str, Any]:
    """A group's JSON with ``n_reached`` (finished runs that reached the target) in each time-to-target metric."""
    for m in metrics:
        if m.censoring.startswith("target"):
            s = group["metrics"][m.label]
            s["n_reached"] = s["n"] - s["n_censored"]
    return group


def _pm(diff: float, ci: float) -> str:
    """``0.031 ± 0.012``: the interval to two significant digits and the difference to the same decimals."""
    if not math.isfinite(ci) or ci <= 0:
        return f"{abs(diff):.4g}"
    decimals = max(0, 1 - math.floor(math.log10(ci)))
    return f"{abs(diff):.{decimals}f} ± {ci:.{decimals}f}"


def fmt_p(p: float) -> str:
    """``p = 0.002``, ``p < 0.001``."""
    if not math.isfinite(p):
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def sentence(metric: Metric, cand: str, base: str, c: stats.Comparison, conf: float = stats.CONFIDENCE) -> str:
    """The plain-language result, e.g. ``adamw reached a lower final loss than mini_bgd in 5 of 5 seeds...``."""
    pct = f"{conf * 100:g} %"
    if c.method == "none":
        extra = f" (difference of means {c.diff:+.4g})" if math.isfinite(c.diff) else ""
        return f"{cand} vs {base} on {metric.label}: {c.note}{extra}."
    if c.diff == 0:
        return f"{cand} and {base} had the same mean {metric.label} ({c.method}, n = {c.n})."
    is_better = (c.diff < 0) == metric.lower_is_better
    word = metric.better if is_better else metric.worse
    head = f"{cand} {metric.verb} {word} {metric.label} than {base}"
    if c.note and c.ci == 0:
        return f"{head} by {abs(c.diff):.4g} ({c.method}, n = {c.n}); {c.note}."
    if c.method == "sign":
        if c.n == 0 or c.wins == c.losses:
            return f"{cand} vs {base} on {metric.label}: {c.note}; neither is ahead ({c.wins} : {c.losses})."
        ahead = c.wins > c.losses
        word = metric.better if ahead else metric.worse
        text = (f"{cand} {metric.verb} {word} {metric.label} than {base} in {max(c.wins, c.losses)} of "
                f"{c.n} seeds ({c.note}), {fmt_p(c.p)}")
        if math.isfinite(c.p) and c.p >= 1 - conf:
            text += f"; not significant at the {100 - conf * 100:g} % level"
        return text + "."
    if c.method == "paired":
        count = c.wins if is_better else c.losses
        shared_only = c.n < max(c.n_candidate, c.n_baseline)
        how = f"paired by seed over the {c.n} shared seeds" if shared_only else "paired by seed"
        text = f"{head} in {count} of {c.n} seeds, by {_pm(c.diff, c.ci)} ({pct} CI, {how}), {fmt_p(c.p)}"
    else:
        text = (f"{head} on average, by {_pm(c.diff, c.ci)} ({pct} CI, Welch's t, {c.n} vs {c.n_baseline} runs), "
                f"{fmt_p(c.p)}")
    if math.isfinite(c.p) and c.p >= 1 - conf:
        text += f"; not significant at the {100 - conf * 100:g} % level"
    return text + "."


def _observations(g: Group, m: Metric) -> tuple[dict[Hashable, float], dict[Hashable, bool], float]:
    """The group's values of ``m``, one per observation: a seed (one configuration) or a (configuration, seed)
    cell (a pooled group), duplicated seeds averaged; which observations are censored (any of their runs);
    and the largest spread between duplicates of one seed."""
    pooled = bool(g.merged)
    cells: dict[Hashable, list[tuple[float, bool]]] = {}
    for r in g.completed:
        v = m.value(r)
        if v is not None:
            cells.setdefault((r.group_key, r.seed) if pooled else r.seed, []).append((v, m.censored(r)))
    values = {k: sum(v for v, _ in vs) / len(vs) for k, vs in cells.items()}
    censored = {k: any(c for _, c in vs) for k, vs in cells.items()}
    spread = max((max(v for v, _ in vs) - min(v for v, _ in vs) for vs in cells.values() if len(vs) > 1),
                 default=0.0)
    return values, censored, spread


def _sort_key(k: Hashable) -> tuple[str, int]:
    return (k[0], k[1]) if isinstance(k, tuple) else ("", int(k))  # type: ignore[call-overload]


def compare_groups(
    groups: Sequence[Group], metrics: Sequence[Metric] = DEFAULT_METRICS, baseline: int = 0,
    experiment: str = "", bootstrap_seed: int = stats.BOOTSTRAP_SEED, experiments: Sequence[str] = (),
    target: Target | None = None,
) -> CompareResult:
    """Summarise every metric of every group and compare each group with ``groups[baseline]``.

    One observation per seed (a pooled group: per configuration and seed); a seed run several times in one
    configuration counts once, as the mean of its finished runs.  Groups that pool configurations are
    compared with Welch's t (no pairing); a metric with censored values gets no mean and no test.
    """
    if groups and not 0 <= baseline < len(groups):
        raise CompareError(f"baseline index {baseline} out of range")
    obs = [{m.label: _observations(g, m) for m in metrics} for g in groups]
    results = []
    for i, g in enumerate(groups):
        summaries: dict[str, stats.Summary] = {}
        censored: dict[str, int] = {}
        warnings: list[str] = []
        if g.merged:
            warnings.append(
                f"{g.short}: pooled {g.configurations} configuration(s) that differ in "
                + ", ".join(f"{k} ({_fmt_values(v)})" for k, v in g.merged.items())
                + "; runs are treated as independent samples (no pairing by seed)")
        dups = g.duplicate_seeds
        if dups:
            spreads = {m.label: obs[i][m.label][2] for m in metrics}
            differ = [f"{k} by up to {v:.3g}" for k, v in spreads.items() if v > 0]
            warnings.append(
                f"{g.short}: seed(s) {', '.join(map(str, dups))} ran more than once in the same configuration; "
                f"each seed counts once, as the mean of its finished runs ("
                + ("the repeats differ: " + "; ".join(differ) if differ else "the repeats agree") + ")")
        for m in metrics:
            values, cens, _ = obs[i][m.label]
            ordered = [v for _, v in sorted(values.items(), key=lambda kv: _sort_key(kv[0]))]
            n_cens = sum(cens.values())
            if n_cens:
                censored[m.label] = n_cens
                bound = min(v for k, v in values.items() if cens[k])
                summaries[m.label] = stats.Summary(len(values), min=min(values.values()), max=max(values.values()))
                warnings.append(f"{g.short}: {m.label}: {n_cens} of {len(values)} finished run(s) never "
                                f"{m.event}; their values are censored (at least {bound:g} {m.field.key}), so "
                                f"no mean is given and the comparison uses the order of the seeds only")
            else:
                # values in seed order: the bootstrap resamples by position, so its interval must not depend
                # on the order the database returned the runs in
                summaries[m.label] = stats.summarize(ordered, bootstrap_seed)
        comparisons: dict[str, stats.Comparison | None] = {}
        sentences: dict[str, str] = {}
        for m in metrics:
            if i == baseline:
                comparisons[m.label] = None
                continue
            cand, cand_cens, _ = obs[i][m.label]
            base, base_cens, _ = obs[baseline][m.label]
            if any(cand_cens.values()) or any(base_cens.values()):
                c = stats.compare_censored(cand, base, cand_cens, base_cens, m.lower_is_better)
            else:
                c = stats.compare(cand, base, m.lower_is_better)
            comparisons[m.label] = c
            sentences[m.label] = sentence(m, g.short, groups[baseline].short, c)
        done = g.count(COMPLETED)
        results.append(GroupResult(
            label=g.label, short=g.short, n_expected=len(g.runs), n_completed=done,
            n_diverged=g.count("diverged"), n_failed=g.count("failed"),
            n_unfinished=len(g.runs) - done - g.count("diverged") - g.count("failed"),
            seeds=sorted(r.seed for r in g.runs), is_baseline=i == baseline,
            summaries=summaries, comparisons=comparisons, sentences=sentences,
            configurations=g.configurations, merged=dict(g.merged), duplicate_seeds=dups, versions=g.versions,
            censored=censored, warnings=warnings,
        ))
    warnings = [w for r in results for w in r.warnings]
    warnings += _version_warnings(groups)
    warnings += [f"{m.label}: {m.definition}" for m in metrics if m.field.kind == "run" and m.field.key == "duration"]
    names = list(experiments) or [experiment]
    return CompareResult(experiment or ", ".join(names), groups[baseline].label if groups else "", list(metrics),
                         results, bootstrap_seed, warnings=warnings, experiments=names,
                         target=None if target is None else str(target))


def _version_warnings(groups: Sequence[Group]) -> list[str]:
    """Versions that differ *between* groups (each group using one): allowed, and said."""
    out = []
    per_group = [g.versions for g in groups]
    for what in sorted({k for v in per_group for k in v}):
        seen: dict[str, list[str]] = {}
        for g, versions in zip(groups, per_group, strict=True):
            for v in versions.get(what, []):
                seen.setdefault(v, []).append(g.short)
        if len(seen) > 1:
            out.append(f"the groups ran different {what} versions: "
                       + "; ".join(f"{v} ({', '.join(names)})" for v, names in seen.items()))
    return out


def method_lines(result: CompareResult) -> list[str]:
    """The method, printed under the table."""
    pct = f"{result.confidence * 100:g} %"
    lower = [m.label for m in result.metrics if m.lower_is_better]
    higher = [m.label for m in result.metrics if not m.lower_is_better]
    direction = "; ".join(x for x in (
        f"lower is better for {', '.join(lower)}" if lower else "",
        f"higher is better for {', '.join(higher)}" if higher else "") if x)
    definitions = [f"{m.label}: {m.definition}." for m in result.metrics if m.definition]
    return [
        *definitions,
        "Statistics over finished runs only; diverged, failed and unfinished runs are counted in their columns "
        "and excluded from every metric (a finished run without a value for a metric is left out of that "
        "metric's n). One value per seed: a seed run several times in one configuration counts once (the mean of "
        "its finished runs); a pooled group (--pool) has one value per configuration and seed. A censored value "
        "(a run that never converged, or never reached the --target) is a lower bound: a group with one has no "
        "mean or interval, and its comparison is the exact two-sided sign test over the shared seeds whose order "
        "is certain.",
        *([f"Time to target ({result.target}): per finished run, the first evaluation where it holds (a per-epoch "
           "history: every --eval-every epochs and the final one; the per-step loss: every update); a run that "
           "never reaches it is counted, as \"k of n reached\", and censored at its totals, never dropped and "
           "never averaged."] if result.target else []),
        f"mean ± half-width of the {pct} Student-t interval (scipy.special.stdtrit, n−1 df); std with ddof = 1; "
        f"IQM = mean of the middle 50 % (25 % trimmed each side) with a {pct} percentile-bootstrap "
        f"interval ({stats.BOOTSTRAP_RESAMPLES} resamples, seed {result.bootstrap_seed}).",
        f"Δ = group − baseline ({result.baseline}) with its {pct} interval: paired t over the shared seeds when "
        f"the two groups share at least two seeds and neither is pooled, Welch's t (Welch–Satterthwaite df) "
        f"otherwise; two-sided p-values from Student's t (scipy.special.stdtr).",
        "P(better) = probability that a run of the group beats a run of the baseline, "
        "Mann–Whitney U / (n·m) with ties counted one half.",
        f"Direction: {direction}." if direction else "",
    ]


# ------------------------------------------------------------------------------------------ the command
def choose_metrics(specs: Sequence[str] | None, runs: Sequence[RunRecord], known: Sequence[str]) -> list[Metric]:
    """The metrics to compare: ``--metric`` values (checked against the summary keys ``known``) or the
    defaults that some run measured (a default censored in every run, such as "updates to converge" when no
    run converged, says nothing and is left out; asked for with ``--metric`` it is shown censored)."""
    if not specs:
        present = [m for m in DEFAULT_METRICS if any(m.value(r) is not None and not m.censored(r) for r in runs)]
        return present or list(DEFAULT_METRICS[:1])
    metrics = [parse_metric(s) for s in specs]
    for spec, m in zip(specs, metrics, strict=True):
        if m.field.kind == "summary" and m.field.key not in known:
            raise CompareError(f"--metric {spec!r}: no run of this experiment has the metric {m.field.key!r}"
                               f"{did_you_mean(m.field.key, known)}; known: {', '.join(known)}")
    labels = [m.label for m in metrics]
    if len(set(labels)) != len(labels):
        raise CompareError(f"--metric given twice: {', '.join(labels)}")
    return metrics


def compare_experiments(
    store: Any, experiments: dict[int, str], *, by: Sequence[str] | None = None, pool: bool = False,
    metrics: Sequence[str] | None = None, baseline: str | None = None, run_ids: Sequence[str] | None = None,
    target: str | None = None,
) -> tuple[CompareResult, list[Group]]:
    """``expsvc compare``: read the runs of ``experiments`` (id → name) through the read API, group them
    (refusing merged configurations unless ``pool``), and compare every group with the baseline.

    ``run_ids`` narrows the runs to these (the report's ``--where``); None compares every run.  ``target``
    (``"val_loss <= 0.3"``) adds the time-to-target metrics (without ``metrics``: instead of the defaults)."""
    from expsvc.store import read

    goal = None if target is None else parse_target(target)
    ids = list(experiments)
    names = list(experiments.values())
    runs = read.records(store, experiment_ids=ids, run_ids=run_ids, versions=True)
    if not runs:
        raise CompareError(f"experiment {' and '.join(repr(n) for n in names)} has no runs")
    resolve_params(runs, spec_baseline=baseline is not None and "(" in baseline)
    groups = group_runs(runs, by)
    check_grouping(groups, by, pool)
    known = read.summary_keys(store, ids)
    chosen = choose_metrics(metrics, runs, known) if metrics or goal is None else []
    if goal is not None:
        chosen += target_metrics(store, runs, goal, known)
    result = compare_groups(groups, chosen, find_baseline(groups, baseline), experiments=names, target=goal)
    return result, groups
