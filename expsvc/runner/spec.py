"""Experiment specs: from flags or a TOML file, validated before any work starts, expanded into a grid.

A spec names one value or a list of values for each grid key; the runs are the product of the lists
times the seeds.  Every bad value is reported as one line naming the key and what is allowed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expsvc.errors import ExpsvcError, did_you_mean, path_problem
from expsvc.specs import MAX_RANGE_POINTS, RANGES, ComponentSpec, Grid, SpecError, make_range, parse, parse_list

DEFAULTS: dict[str, Any] = {
    "name": None,
    "description": None,
    "dataset": "points",
    "model": "linear(5), tanh, linear(3), tanh, linear(1)",
    "loss": "bce_with_logits",
    "optimizer": ["mini_bgd", "adamw"],
    "lr": None,
    "seeds": 5,
    "epochs": 200,
    "batch_size": 50,
    "schedule": "constant",
    "tol": 1e-5,
    "shuffle": False,
    "dtype": "float64",
    "data_seed": None,
    "val_split": 0.0,
    "eval_every": 0,
}
"""The seed experiment: Mini-BGD vs AdamW on ``points``, 2-5-3-1 tanh, BCE-with-logits, batch 50, each
optimizer's own default learning rate (1e-3 for the built-ins; ``lr`` None: the optimizer's default).

``data_seed`` None keeps each dataset's own ``seed`` argument (default 0): every run sees the same data and
its seed changes only the initial weights and the batch order (paired comparisons); an integer draws every
run's data with that seed; ``"run"`` draws each run's data with the run's own seed.

``val_split`` F in [0, 1) holds out that fraction of the training data as validation (its own fixed stream,
the same for every configuration and seed; 0: no validation, today's data exactly); ``eval_every`` N > 0
evaluates loss and metrics on validation, test and training data every N epochs (0: only at the end)."""

GRID_KEYS = ("dataset", "model", "loss", "optimizer", "lr", "epochs", "batch_size", "schedule")
"""Keys that may hold a list of values; the runs are their product."""

DTYPES = ("float64", "float32")
MAX_SEEDS = 10_000  # seeds of one experiment (each is a run)
MAX_RUNS = MAX_RANGE_POINTS
"""Runs one experiment may make (grid points x seeds): 100,000."""
GRID_KINDS = ("optimizer", "schedule")
"""Components whose numeric arguments may hold a grid: a list (``momentum=[0.8, 0.9]``) or a range."""
MAX_SEED = 2**31 - 1  # the seed column is a 32-bit integer on PostgreSQL
ALIASES = {"opt": "optimizer", "optimizers": "optimizer", "seed": "seeds", "batch-size": "batch_size"}


class SpecValidationError(ExpsvcError):
    """A spec value that is not allowed."""


def _fail(key: str, value: Any, allowed: str) -> SpecValidationError:
    return SpecValidationError(f"{key}: {value!r} is not allowed; expected {allowed}")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _number(key: str, value: Any, *, integer: bool, positive: bool, allow_zero: bool = False,
            maximum: int | None = None, what: str = "") -> float | int:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or (isinstance(value, float) and not math.isfinite(value)):
        raise _fail(key, value, "an integer" if integer else "a finite number")
    if positive and not (value > 0 or (allow_zero and value == 0)):
        raise _fail(key, value, "a number >= 0" if allow_zero else "a positive number")
    if maximum is not None and value > maximum:
        raise _fail(key, value, f"at most {maximum:,}{what}")
    return value


OPTIONAL_KEYS: dict[str, Any] = {"data_seed": None, "val_split": 0.0, "eval_every": 0}
"""Run options added after runs were first stored, with their "off" value: left out of the stored config
(and so of the group key) when off, so older runs and runs that do not use them compare as before."""
MAX_EVAL_EVERY = 1_000_000

SpecText = ComponentSpec | tuple[ComponentSpec, ...]
SPEC_KEYS = ("dataset", "model", "loss", "optimizer", "schedule")
"""Keys holding parsed component specs (``model`` a tuple of layers); stored as text."""


def spec_text(value: SpecText) -> str:
    """The stored text of a parsed spec (``model``: its layers joined with ``", "``)."""
    return ", ".join(str(s) for s in value) if isinstance(value, tuple) else str(value)


@functools.lru_cache(maxsize=4096)
def _parsed(text: str, key: str) -> SpecText:
    """A stored spec text parsed (once per distinct text: resuming many runs parses each text once)."""
    return tuple(parse_list(text, key)) if key == "model" else parse(text, key)


def split_lr(spec: ComponentSpec) -> tuple[ComponentSpec, Any]:
    """The optimizer without its learning rate, and that rate (``lr=`` or the first positional argument, the
    base class's convention) or None: the learning rate has one home, :attr:`RunConfig.lr`."""
    if "lr" in spec.kwargs:
        rest = {k: v for k, v in spec.kwargs.items() if k != "lr"}
        return ComponentSpec(spec.name, spec.args, rest), spec.kwargs["lr"]
    if spec.args:
        return ComponentSpec(spec.name, spec.args[1:], spec.kwargs), spec.args[0]
    return spec, None


@dataclass(frozen=True)
class RunConfig:
    """One configuration of the grid (everything but the seed), with its component specs parsed.

    ``optimizer`` never holds the learning rate: ``lr`` is its one home (None until the plan resolves it to the
    optimizer's own default, when neither the spec nor ``--lr`` gives one)."""

    dataset: ComponentSpec
    model: tuple[ComponentSpec, ...]
    loss: ComponentSpec
    optimizer: ComponentSpec
    lr: float | None
    epochs: int
    batch_size: int
    schedule: ComponentSpec
    tol: float
    shuffle: bool
    dtype: str
    data_seed: int | str | None = None  # see DEFAULTS; None is left out of as_dict (group keys stay as they were)
    val_split: float = 0.0  # see DEFAULTS; 0 is left out of as_dict (stored configs and group keys unchanged)
    eval_every: int = 0  # see DEFAULTS; 0 is left out of as_dict

    def as_dict(self) -> dict[str, Any]:
        """The stored form: every spec as text; keys at their "off" value (added later) are left out, so a
        run that does not use them keeps the stored config and group key it had before they existed."""
        out = {k: spec_text(v) if k in SPEC_KEYS else v for k, v in self.__dict__.items()}
        for key, off in OPTIONAL_KEYS.items():
            if out[key] == off:
                del out[key]
        return out

    def text(self, key: str) -> str:
        """One value as people read it (specs as their text)."""
        value = getattr(self, key)
        return spec_text(value) if key in SPEC_KEYS else str(value)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> RunConfig:
        """The configuration stored with a run (keys added later, such as ``data_seed``, may be missing; an
        older run may hold its ``lr`` in the optimizer text too, which wins as it did then)."""
        values = {k: config[k] for k in cls.__dataclass_fields__ if k in config}
        for key in SPEC_KEYS:
            values[key] = _parsed(values[key], key)
        values["optimizer"], explicit = split_lr(values["optimizer"])
        if isinstance(explicit, int | float) and not isinstance(explicit, bool):
            values["lr"] = float(explicit)
        values.setdefault("lr", None)
        return cls(**values)

    @property
    def group_key(self) -> str:
        """Hash of the configuration without the seed: the seeds of one configuration share it."""
        blob = json.dumps(self.as_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def params(self) -> dict[str, Any]:
        """Flattened, typed parameters for filtering (``params.optimizer = 'adamw'``)."""
        out: dict[str, Any] = self.as_dict()
        opt = self.optimizer
        out["optimizer"] = opt.name
        out["optimizer_spec"] = spec_text(opt)
        for k, v in opt.kwargs.items():
            if isinstance(v, str | int | float | bool) or v is None:
                out[f"optimizer.{k}"] = v
        return out


def load_toml(path: Path) -> dict[str, Any]:
    """The plain keys of a TOML experiment (or study) file, ``name`` defaulting to the file's stem; a missing,
    unreadable or invalid file, or a nested table, is one line."""
    problem = path_problem(path, "a TOML file")
    if problem is not None:
        raise SpecValidationError(f"experiment file {str(path)!r} {problem}")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SpecValidationError(f"{path}: not valid TOML ({err})") from None
    nested = [k for k, v in values.items() if isinstance(v, dict)]
    if nested:
        raise SpecValidationError(f"{path}: unknown table [{nested[0]}]; the file holds plain keys only")
    values.setdefault("name", path.stem)
    return values


@dataclass
class ExperimentSpec:
    """A validated experiment: grid values per key, seeds and run options."""

    name: str | None = None
    description: str | None = None
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    tol: float = 1e-5
    shuffle: bool = False
    dtype: str = "float64"
    data_seed: int | str | None = None
    val_split: float = 0.0
    eval_every: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "spec") -> ExperimentSpec:
        """Validate ``values`` (unknown keys, types, ranges, component syntax) over the defaults."""
        merged: dict[str, Any] = dict(DEFAULTS)
        for raw_key, value in values.items():
            key = ALIASES.get(raw_key, raw_key)
            if key not in DEFAULTS:
                raise SpecValidationError(
                    f"{source}: unknown key {raw_key!r}{did_you_mean(raw_key, DEFAULTS)}; "
                    f"allowed: {', '.join(DEFAULTS)}"
                )
            merged[key] = value
        return cls._validate(merged)

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentSpec:
        """Load a TOML experiment file; ``overrides`` (from flags) replace the file's values."""
        path = Path(path)
        values = load_toml(path)
        values.update(overrides or {})
        return cls.from_dict(values, source=path.name)

    @classmethod
    def _validate(cls, v: dict[str, Any]) -> ExperimentSpec:
        grid: dict[str, list[Any]] = {}
        for key in GRID_KEYS:
            values = _as_list(v[key])
            if not values:
                raise _fail(key, v[key], "at least one value")
            grid[key] = values
        for key, what in (("dataset", "a dataset"), ("loss", "a loss"), ("optimizer", "an optimizer"),
                          ("schedule", "a schedule")):
            checked: list[Any] = []
            for value in grid[key]:
                if not isinstance(value, str):
                    raise _fail(key, value, f"{what} spec as text, e.g. 'adamw(weight_decay=0)'")
                spec = parse(value, key)
                checked += grid_points(key, value, spec) if key in GRID_KINDS else [no_grid(key, value, spec)]
            grid[key] = list(dict.fromkeys(checked))
        for spec in grid["optimizer"]:
            explicit = split_lr(spec)[1]
            if ("lr" in spec.kwargs or spec.args) and not (
                    numeric(explicit) and not isinstance(explicit, tuple) and math.isfinite(explicit) and explicit > 0):
                raise SpecValidationError(f"optimizer {str(spec)!r}: lr={explicit!r} is not allowed; expected a "
                                          f"number > 0")
        models = []
        for value in grid["model"]:
            if not isinstance(value, str):
                raise _fail("model", value, "layers as text, e.g. 'linear(5), tanh, linear(1)'")
            models.append(tuple(no_grid("model", value, s) for s in parse_list(value, "model")))
        grid["model"] = models
        lrs: list[Any] = []
        for x in grid["lr"]:
            lrs += parse_range("lr", x) if isinstance(x, str) else [x]
        grid["lr"] = [None] if lrs == [None] else [float(_number("lr", x, integer=False, positive=True)) for x in lrs]
        grid["epochs"] = [int(_number("epochs", x, integer=True, positive=True)) for x in grid["epochs"]]
        grid["batch_size"] = [int(_number("batch_size", x, integer=True, positive=True)) for x in grid["batch_size"]]
        tol = float(_number("tol", v["tol"], integer=False, positive=True, allow_zero=True))
        if not isinstance(v["shuffle"], bool):
            raise _fail("shuffle", v["shuffle"], "true or false")
        if v["dtype"] not in DTYPES:
            raise _fail("dtype", v["dtype"], " or ".join(DTYPES))
        seeds = v["seeds"]
        if isinstance(seeds, list | tuple):
            if not seeds:
                raise _fail("seeds", seeds, "a count >= 1 or a list of seeds")
            if len(seeds) > MAX_SEEDS:
                raise _fail("seeds", f"a list of {len(seeds):,}", f"at most {MAX_SEEDS:,} seeds")
            seed_list = [int(_number("seeds", s, integer=True, positive=False, maximum=MAX_SEED,
                                     what=" (seeds are stored as 32-bit integers)")) for s in seeds]
            if any(s < 0 for s in seed_list):
                raise _fail("seeds", seeds, "non-negative seeds")
            if len(set(seed_list)) != len(seed_list):
                raise _fail("seeds", seeds, "distinct seeds")
        else:
            count = int(_number("seeds", seeds, integer=True, positive=True, maximum=MAX_SEEDS, what=" seeds"))
            seed_list = list(range(count))
        for key in ("name", "description"):
            if v[key] is not None and not (isinstance(v[key], str) and v[key].strip()):
                raise _fail(key, v[key], "a non-empty string")
        data_seed = v["data_seed"]
        if data_seed is not None:
            if data_seed != "run":
                data_seed = int(_number("data_seed", data_seed, integer=True, positive=False, maximum=MAX_SEED))
                if data_seed < 0:
                    raise _fail("data_seed", data_seed, "'run' or a seed >= 0")
            for spec in grid["dataset"]:
                if "seed" in spec.kwargs:
                    raise SpecValidationError(f"data_seed: dataset {str(spec)!r} sets its own seed; give the seed in "
                                              f"one place (drop seed= from the dataset, or drop data_seed)")
        val_split = float(_number("val_split", v["val_split"], integer=False, positive=True, allow_zero=True))
        if not val_split < 1:
            raise _fail("val_split", v["val_split"], "a fraction from 0 (no validation) to below 1")
        eval_every = int(_number("eval_every", v["eval_every"], integer=True, positive=True, allow_zero=True,
                                 maximum=MAX_EVAL_EVERY, what=" epochs"))
        runs = math.prod(len(grid[k]) for k in GRID_KEYS) * len(seed_list)
        if runs > MAX_RUNS:
            sizes = " x ".join(f"{len(grid[k])} {k}" for k in GRID_KEYS if len(grid[k]) > 1)
            raise SpecValidationError(f"the grid makes {runs:,} runs ({sizes or '1 configuration'} x "
                                      f"{len(seed_list):,} seeds); at most {MAX_RUNS:,} runs are allowed")
        return cls(
            name=v["name"], description=v["description"], grid=grid, seeds=seed_list,
            tol=tol, shuffle=v["shuffle"], dtype=v["dtype"], data_seed=data_seed, val_split=val_split,
            eval_every=eval_every,
        )

    def configs(self) -> list[RunConfig]:
        """The grid's configurations in a stable order (keys in ``GRID_KEYS`` order); a learning rate in the
        optimizer spec wins over the ``lr`` key (its one home is then ``RunConfig.lr``)."""
        out = []
        for combo in itertools.product(*(self.grid[k] for k in GRID_KEYS)):
            values = dict(zip(GRID_KEYS, combo, strict=True))
            optimizer, explicit = split_lr(values["optimizer"])
            lr = float(explicit) if isinstance(explicit, int | float) else values["lr"]
            out.append(RunConfig(
                dataset=values["dataset"], model=values["model"], loss=values["loss"],
                optimizer=optimizer, lr=lr, epochs=values["epochs"],
                batch_size=values["batch_size"], schedule=values["schedule"], tol=self.tol,
                shuffle=self.shuffle, dtype=self.dtype, data_seed=self.data_seed, val_split=self.val_split,
                eval_every=self.eval_every,
            ))
        return list(dict.fromkeys(out))



def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric(value: Any) -> bool:
    """Whether an argument is a numeric hyper-parameter (a number, or a tuple of numbers such as ``betas``):
    the values that may differ between the replicas of one group."""
    return _is_number(value) or (isinstance(value, tuple) and bool(value) and all(_is_number(v) for v in value))


def grid_points(key: str, text: str, spec: ComponentSpec) -> list[ComponentSpec]:
    """The grid points of an optimizer or schedule spec: the product of its list-valued arguments, each a
    non-empty list of numbers (or of tuples of numbers); a switch or a text argument cannot be a grid."""
    axes: list[list[tuple[int | str, Any]]] = []
    for name, value in [*enumerate(spec.args), *spec.kwargs.items()]:
        if not isinstance(value, list):
            axes.append([(name, value)])
            continue
        arg = f"argument {name + 1}" if isinstance(name, int) else name
        if not value:
            raise SpecValidationError(f"{key}: {arg}=[] in {text!r} is an empty grid; expected at least one number")
        for item in value:
            if isinstance(item, bool) or item is None or isinstance(item, str):
                raise SpecValidationError(
                    f"{key}: {arg}={value!r} in {text!r}: {item!r} cannot be a grid value; a list is a grid over a "
                    f"numeric hyper-parameter (numbers only); a switch or a name takes one value (repeat the "
                    f"{key} to compare several)")
            if not numeric(item):
                raise SpecValidationError(f"{key}: {arg}={value!r} in {text!r}: {item!r} is not a number; a list is "
                                          f"a grid of numbers (or of tuples of numbers, e.g. betas)")
        axes.append([(name, item) for item in value])
    points = []
    for combo in itertools.product(*axes):
        args = tuple(v for n, v in combo if isinstance(n, int))
        points.append(ComponentSpec(spec.name, args, {str(n): v for n, v in combo if isinstance(n, str)}))
    return points


def no_grid(key: str, text: str, spec: ComponentSpec) -> ComponentSpec:
    """``spec`` unchanged, unless it holds a range (``logspace``/``linspace``), which only an optimizer or a
    schedule argument (or ``lr``) may hold."""
    for name, value in [*enumerate(spec.args), *spec.kwargs.items()]:
        if isinstance(value, Grid):
            arg = f"argument {name + 1}" if isinstance(name, int) else name
            raise SpecValidationError(f"{key}: {arg} in {text!r} is a range; ranges are allowed in optimizer and "
                                      f"schedule arguments and in lr only")
    return spec


def parse_range(key: str, text: str) -> list[Any]:
    """``"logspace(1e-4, 0.1, 4)"`` (or ``linspace``) as its numbers; any other text is refused in one line."""
    try:
        spec: ComponentSpec | None = parse(text, key)
    except SpecError:
        spec = None
    if spec is None or spec.name not in RANGES or spec.kwargs or len(spec.args) != 3:
        raise _fail(key, text, "a number or a range such as 'logspace(1e-4, 0.1, 4)' or 'linspace(0.1, 1, 10)'")
    try:
        return list(make_range(spec.name, *spec.args))
    except ValueError as err:
        raise SpecValidationError(f"{key}: {err}") from None


def dataset_for(config: RunConfig, seed: int) -> ComponentSpec:
    """The dataset spec the run with ``seed`` loads: the configuration's own when ``data_seed`` is None (the
    same data for every seed), else with ``seed=`` set to ``data_seed`` or, for ``"run"``, to the run's seed."""
    if config.data_seed is None:
        return config.dataset
    spec = config.dataset
    value = seed if config.data_seed == "run" else int(config.data_seed)
    return ComponentSpec(spec.name, spec.args, {**spec.kwargs, "seed": value})


def shares_data(config: RunConfig) -> bool:
    """Whether all seeds of ``config`` train on the same data (so they can share one vectorised group)."""
    return config.data_seed != "run"


__all__ = ["DEFAULTS", "GRID_KEYS", "MAX_RUNS", "ExperimentSpec", "RunConfig", "SpecError", "SpecValidationError",
           "dataset_for", "shares_data"]
