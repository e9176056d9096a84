"""Sweep specs: a base recipe, axes to vary, a name template, evaluation and executor options.

A spec is YAML::

    name: cifar10-small                 # default: the file's stem
    recipe: ../recipes/cifar10.yaml     # a TrainConfig YAML (relative to this file), optional
    base: {dataset: cifar10, epochs: 10}  # TrainConfig keys over the recipe, optional
    grid:                               # cartesian product, first axis outermost
      model: [wide_resnet16_1, wide_resnet16_2]
      generated_data: {nogen: null, gen: data/gen.npz}   # label -> value (labels go in names)
    zip:                                # paired axes: the i-th values go together
      epochs: [110, 400]
      ema_decay: [null, 0.995]
    seeds: [0, 1]                       # or a count: 3 -> 0, 1, 2
    name_template: "{model}-{method}-k{attack_steps}-{generated_data}-s{seed}"
    output_dir: runs/cifar10-small      # default: runs/<name>
    store: null                         # default: $ROBUSTSCALE_STORE, else <output_dir>/runs.db
    evaluation: {attack: pgd, n_examples: 1000, eps: 8/255}   # after training; null: none
    executor: {partition: gpu, gpus_per_job: 1, cpus_per_task: 8, timeout_min: 1440,
               array_parallelism: 16, sbatch: {account: myproj}}
    cost: {device_type: A100-80GB, price_preset: default, throughput: null, flop_rate: null}

``zip`` may also be a list of such groups. A design that is not one product (a full grid of sizes x
lengths plus attack steps on a subset plus extra seeds on a few configurations) is a list of
``blocks``, each with its own ``base`` (over the top-level one), ``grid``, ``zip`` and ``seeds``;
the runs are the blocks' runs in order (top-level grid / zip / seeds then must be absent). Every expanded run is a validated ``TrainConfig``
(bad values fail when the spec is loaded, before anything runs); names must be unique.
"""
from __future__ import annotations

import itertools
import os
import re
import string
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..config import Method, TrainConfig, load_yaml, parse_fraction
from ..data.info import check_eval_subset
from ..errors import UserError, check_keys, choice
from ..evaluation.spec import Attack, EvalSpec
from ..models import check_model_name

SPEC_KEYS = ("name", "description", "recipe", "base", "grid", "zip", "seeds", "blocks", "name_template", "output_dir",
             "store", "evaluation", "executor", "cost", "study")
BLOCK_KEYS = ("base", "grid", "zip", "seeds")  # study: read by `robustscale study`
EVALUATION_KEYS = ("attack", "eps", "n_examples", "batch_size", "steps", "restarts", "seed")
EXECUTOR_KEYS = ("partition", "gpus_per_job", "tasks_per_job", "nodes", "gpus_per_node", "tasks_per_node",
                 "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism", "max_parallel", "sbatch", "setup",
                 "use_array", "max_requeues", "signal_delay_s", "name_prefix")
COST_KEYS = ("device_type", "price_preset", "price_table", "throughput", "flop_rate")
DEFAULT_TEMPLATE = "{sweep}-{index}"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}$")


@dataclass(frozen=True)
class EvaluationOptions:
    """The evaluation each finished run gets (``robustscale.evaluation.evaluate_run`` arguments)."""

    attack: str = "pgd"
    eps: float | None = None  # None: the run's training eps
    n_examples: int | None = 1000
    batch_size: int | None = None
    steps: int | None = None
    restarts: int | None = None
    seed: int = 0

    def kwargs(self) -> dict[str, Any]:
        out = {"attack": self.attack, "eps": self.eps, "n_examples": self.n_examples}
        for key in ("batch_size", "steps", "restarts"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.seed:
            out["seed"] = self.seed
        return out


@dataclass(frozen=True)
class ExecutorOptions:
    """How jobs run: Slurm resources (one job per run) and local parallelism."""

    partition: str | None = None
    nodes: int = 1  # Slurm nodes per run (one DDP process group across them; sweep.runner.slurm_parameters)
    gpus_per_node: int | None = None  # None: gpus_per_job / nodes, else 1
    tasks_per_node: int | None = None  # DDP processes per node; None: one per GPU (at least 1)
    gpus_per_job: int | None = None  # None: 1 on Slurm, all visible GPUs split by max_parallel locally
    tasks_per_job: int | None = None  # DDP processes per run; None: one per GPU (at least 1)
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    array_parallelism: int = 64
    max_parallel: int = 1  # local executor: runs at once
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra #SBATCH options, e.g. {account: x, qos: y}
    setup: tuple[str, ...] = ()  # shell lines run before each job (module load ...)
    use_array: bool = True
    max_requeues: int = 3
    signal_delay_s: int = 120
    name_prefix: str = "rs"

    @property
    def job_gpus(self) -> int | None:
        """GPUs of one run's job: ``gpus_per_node`` x ``nodes`` when given per node, else ``gpus_per_job``."""
        return self.gpus_per_node * self.nodes if self.gpus_per_node is not None else self.gpus_per_job


@dataclass(frozen=True)
class CostOptions:
    device_type: str | None = None
    price_preset: str = "default"
    price_table: str | None = None
    throughput: float | None = None  # training images per second per job
    flop_rate: float | None = None  # achieved training FLOP/s per job (measured FLOPs); img/s = this / FLOPs per image


@dataclass
class PlannedRun:
    """One expanded run of a sweep."""

    index: int
    name: str
    cfg: TrainConfig
    axes: dict[str, str]  # axis -> label of its value in this run
    config_hash: str

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output_dir) / self.name


@dataclass
class SweepSpec:
    path: Path | None
    name: str
    description: str
    runs: list[PlannedRun]
    axes: list[str]
    evaluation: EvaluationOptions | None
    executor: ExecutorOptions
    cost: CostOptions
    output_dir: str
    store: str | None

    def __len__(self) -> int:
        return len(self.runs)


# ---------------------------------------------------------------------- loading
def load_spec(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read, expand and validate a sweep spec. ``overrides`` are TrainConfig keys applied to every run."""
    path = Path(path)
    data = load_yaml(path)
    return build_spec(data, path=path, overrides=overrides)


def build_spec(data: Mapping[str, Any], *, path: Path | None = None,
               overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    where = str(path) if path is not None else "sweep spec"
    check_keys(data, SPEC_KEYS, where)
    if not any(data.get(k) for k in ("recipe", "base", "grid", "zip", "seeds", "blocks")) and \
            not any(k in data for k in ("grid", "zip")):
        raise UserError(f"sweep spec {where} defines no runs: give a recipe or base (the TrainConfig of every run) "
                        f"and axes to vary, e.g. grid: {{model: [wide_resnet16_1, wide_resnet16_2]}}")
    name = str(data.get("name") or (path.stem if path is not None else "sweep"))
    if not NAME_PATTERN.match(name):
        raise UserError(f"invalid sweep name {name!r} in {where}: use letters, digits and . _ + = -")
    config_keys = [f.name for f in fields(TrainConfig)]

    base: dict[str, Any] = {}
    if data.get("recipe"):
        recipe = Path(str(data["recipe"])).expanduser()
        if not recipe.is_absolute() and path is not None:
            recipe = path.parent / recipe
        base.update(load_yaml(recipe))
    inline = data.get("base") or {}
    if not isinstance(inline, Mapping):
        raise UserError(f"`base` in {where} must be a mapping of TrainConfig keys, got {type(inline).__name__}")
    base.update(inline)
    base.update(overrides or {})
    for key in base:
        if str(key).replace("-", "_") not in config_keys:
            raise UserError(f"unknown TrainConfig key {key!r} in base of {where}; valid: {', '.join(config_keys)}")
    base = {str(k).replace("-", "_"): v for k, v in base.items()}

    output_dir = str(data.get("output_dir") or base.get("output_dir") or Path("runs") / name)
    template = str(data.get("name_template") or DEFAULT_TEMPLATE)
    runs: list[PlannedRun] = []
    axis_names: list[str] = []
    overrides = {str(k).replace("-", "_"): v for k, v in (overrides or {}).items()}
    for part, part_base, part_where in _blocks(data, base, where):
        part_base.update(overrides)  # --set wins over a block's base too
        axes = _parse_axes(part, part_where, config_keys)
        seeds = _parse_seeds(part.get("seeds"), part_where)
        if seeds is not None and any(a.key == "seed" for group in axes for a in group):
            raise UserError(f"seed is varied by both `seeds` and an axis in {part_where}; use one")
        runs += _expand(part_base, axes, seeds, output_dir, template, name, where, len(runs))
        axis_names += [a.key for g in axes for a in g] + (["seed"] if seeds is not None else [])
    _check_unique(runs, where)

    evaluation = parse_evaluation(data.get("evaluation", {}), where)
    executor = _parse_executor(data.get("executor"), where)
    cost = _parse_options(CostOptions, data.get("cost") or {}, COST_KEYS, "cost", where)
    store = data.get("store")
    return SweepSpec(path=path, name=name, description=str(data.get("description") or ""), runs=runs,
                     axes=list(dict.fromkeys(axis_names)),
                     evaluation=evaluation, executor=executor, cost=cost, output_dir=output_dir,
                     store=None if store is None else str(store))


def _blocks(data: Mapping[str, Any], base: dict[str, Any], where: str):
    """``(axes mapping, base, where)`` of each block of runs: the spec itself, or each of its ``blocks``."""
    blocks = data.get("blocks")
    if blocks is None:
        return [(data, base, where)]
    if not isinstance(blocks, list) or not blocks:
        raise UserError(f"`blocks` in {where} must be a non-empty list of mappings with keys {', '.join(BLOCK_KEYS)}")
    clash = [k for k in ("grid", "zip", "seeds") if k in data]
    if clash:
        raise UserError(f"{', '.join(clash)} in {where} go inside each of its blocks (the spec has `blocks`)")
    out = []
    for i, block in enumerate(blocks):
        what = f"{where}: block {i}"
        if not isinstance(block, Mapping):
            raise UserError(f"{what} must be a mapping with keys {', '.join(BLOCK_KEYS)}")
        check_keys(block, BLOCK_KEYS, what)
        inline = block.get("base") or {}
        if not isinstance(inline, Mapping):
            raise UserError(f"`base` in {what} must be a mapping of TrainConfig keys")
        merged = dict(base)
        for key, value in inline.items():
            key = str(key).replace("-", "_")
            if key not in {f.name for f in fields(TrainConfig)}:
                raise UserError(f"unknown TrainConfig key {key!r} in base of {what}")
            merged[key] = value
        out.append((block, merged, what))
    return out


def _expand(base: dict[str, Any], axes: list[list["_Axis"]], seeds: list[int] | None, output_dir: str,
            template: str, sweep: str, where: str, start: int) -> list[PlannedRun]:
    """The runs of one product of axes (and seeds) over ``base``; indices from ``start``."""
    runs: list[PlannedRun] = []
    groups = [list(range(len(g[0].labels))) for g in axes]
    seed_values = seeds if seeds is not None else [None]
    for offset, (combo, seed) in enumerate(itertools.product(itertools.product(*groups), seed_values)):
        index = start + offset
        values = dict(base)
        labels: dict[str, str] = {}
        for group, i in zip(axes, combo):
            for axis in group:
                values[axis.key] = axis.values[i]
                labels[axis.key] = axis.labels[i]
        if seed is not None:
            values["seed"] = seed
            labels["seed"] = str(seed)
        values["output_dir"] = output_dir
        values.pop("name", None)
        what = f"{where}: run {index} ({', '.join(f'{k}={v}' for k, v in labels.items()) or 'base'})"
        try:
            cfg = TrainConfig.from_dict(values, source=what)
        except UserError as exc:  # name the run and its axis values (the recipe alone may be fine)
            raise UserError(str(exc) if what in str(exc) else f"{what}: {exc}") from None
        run_name = _render_name(template, cfg, labels, index, sweep, where)
        cfg = cfg.replace(name=run_name)
        _check_run(cfg, what)
        runs.append(PlannedRun(index=index, name=run_name, cfg=cfg, axes=labels, config_hash=cfg.config_hash()))
    return runs


# ---------------------------------------------------------------------- axes
@dataclass
class _Axis:
    key: str
    values: list[Any]
    labels: list[str]


def _parse_axes(data: Mapping[str, Any], where: str, config_keys: list[str]) -> list[list[_Axis]]:
    """Groups of axes that vary together: each grid axis alone, each zip group together."""
    groups: list[list[_Axis]] = []
    seen: set[str] = set()

    def axis(section: str, key: Any, spec: Any) -> _Axis:
        key = str(key).replace("-", "_")
        if key not in config_keys or key in ("name", "output_dir"):
            valid = [k for k in config_keys if k not in ("name", "output_dir")]
            raise UserError(f"unknown axis {key!r} in {section} of {where}; valid: {', '.join(valid)}")
        if key in seen:
            raise UserError(f"axis {key!r} appears twice in {where}")
        seen.add(key)
        if isinstance(spec, Mapping):
            if not spec:
                raise UserError(f"axis {key!r} in {section} of {where} has no values")
            labels, values = [str(k) for k in spec], list(spec.values())
        elif isinstance(spec, (list, tuple)):
            if not spec:
                raise UserError(f"axis {key!r} in {section} of {where} has no values")
            values, labels = list(spec), [value_label(v) for v in spec]
        else:
            raise UserError(f"axis {key!r} in {section} of {where} must be a list of values or a mapping "
                            f"label -> value, got {spec!r}")
        return _Axis(key, values, labels)

    if "grid" in data and not data["grid"]:
        raise UserError(f"`grid` in {where} is empty; give at least one axis (e.g. grid: {{model: [a, b]}}) "
                        f"or remove the key for a single run")
    if "zip" in data and not data["zip"]:
        raise UserError(f"`zip` in {where} is empty; give paired axes of equal length or remove the key")
    grid = data.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise UserError(f"`grid` in {where} must map TrainConfig keys to lists of values")
    for key, spec in grid.items():
        groups.append([axis("grid", key, spec)])
    zips = data.get("zip") or []
    if isinstance(zips, Mapping):
        zips = [zips]
    if not isinstance(zips, list):
        raise UserError(f"`zip` in {where} must be a mapping of axes (or a list of such groups)")
    for z in zips:
        if not isinstance(z, Mapping) or not z:
            raise UserError(f"each zip group in {where} must be a non-empty mapping of axes")
        group = [axis("zip", k, v) for k, v in z.items()]
        lengths = {a.key: len(a.values) for a in group}
        if len(set(lengths.values())) != 1:
            raise UserError(f"zip axes in {where} must have equal lengths, got "
                            f"{', '.join(f'{k}: {n}' for k, n in lengths.items())}")
        groups.append(group)
    return groups


def _parse_seeds(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise UserError(f"invalid seeds {value!r} in {where}: a count or a list of integers")
    if isinstance(value, int):
        if value < 1:
            raise UserError(f"invalid seeds {value!r} in {where}: a count must be >= 1")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(set(value)) != len(value):
            raise UserError(f"seeds in {where} repeat a value: {value}")
        return list(value)
    raise UserError(f"invalid seeds {value!r} in {where}: a count or a non-empty list of integers")


def value_label(value: Any) -> str:
    """How a value appears in a run name: ``None`` -> none, floats short, paths by their stem."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    if "/" in text or text.endswith((".npz", ".yaml", ".yml")):
        return Path(text).stem
    return text


# ---------------------------------------------------------------------- names
class _Value:
    """A template field: its label by default, the raw value under an explicit format spec."""

    def __init__(self, raw: Any, label: str):
        self.raw, self.label = raw, label

    def __format__(self, spec: str) -> str:
        if not spec:
            return self.label
        try:
            return format(self.raw, spec)
        except (TypeError, ValueError):
            return format(self.label, spec)


def _render_name(template: str, cfg: TrainConfig, labels: Mapping[str, str], index: int, sweep: str,
                 where: str) -> str:
    cfg_values = cfg.to_dict()
    context = {k: _Value(v, labels.get(k, value_label(v))) for k, v in cfg_values.items()}
    context.update(index=_Value(index, str(index)), sweep=_Value(sweep, sweep))
    if cfg.method is Method.STANDARD:  # no attack: {attack_steps} is 0, as in the run record (not the unused key)
        context["attack_steps"] = _Value(0, "0")
    try:
        fields_used = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as exc:
        raise UserError(f"invalid name_template {template!r} in {where}: {exc}") from None
    for f in fields_used:
        base = re.split(r"[.\[]", f)[0]
        if base not in context:
            raise UserError(f"unknown field {{{base}}} in name_template of {where}; valid: index, sweep, "
                            f"{', '.join(cfg_values)}")
    try:
        name = template.format(**context)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise UserError(f"invalid name_template {template!r} in {where}: {exc}") from None
    if not NAME_PATTERN.match(name):
        raise UserError(f"name_template of {where} gives an invalid run name {name!r}: use letters, digits and "
                        f". _ + = - (give axis values as label: value to name them)")
    return name


def _check_run(cfg: TrainConfig, what: str) -> None:
    """What TrainConfig.validate cannot see: the model and dataset must exist."""
    try:
        check_eval_subset(cfg.dataset, cfg.eval_subset)
        check_model_name(cfg.model)
    except UserError as exc:
        raise UserError(f"{what}: {exc}") from None


def _check_unique(runs: list[PlannedRun], where: str) -> None:
    names: dict[str, PlannedRun] = {}
    hashes: dict[str, PlannedRun] = {}
    for r in runs:
        if r.name in names:
            other = names[r.name]
            raise UserError(f"run name collision in {where}: runs {other.index} ({_axes_text(other)}) and {r.index} "
                            f"({_axes_text(r)}) are both named {r.name!r}; add the differing axes to name_template")
        names[r.name] = r
        if r.config_hash in hashes:
            other = hashes[r.config_hash]
            raise UserError(f"runs {other.name!r} and {r.name!r} in {where} have the same config "
                            f"(hash {r.config_hash}): an axis changes nothing the run computes")
        hashes[r.config_hash] = r


def _axes_text(run: PlannedRun) -> str:
    return ", ".join(f"{k}={v}" for k, v in run.axes.items()) or "base"


# ---------------------------------------------------------------------- options
def parse_evaluation(value: Any, where: str) -> EvaluationOptions | None:
    if value is None or value is False:
        return None
    if not isinstance(value, Mapping):
        raise UserError(f"`evaluation` in {where} must be a mapping ({', '.join(EVALUATION_KEYS)}) or null")
    opts = _parse_options(EvaluationOptions, value, EVALUATION_KEYS, "evaluation", where)
    attack = str(opts.attack).strip().lower()
    attack = choice(Attack, attack, what="evaluation attack").value
    if opts.n_examples is not None and opts.n_examples < 1:
        raise UserError(f"invalid evaluation n_examples {opts.n_examples!r} in {where}: must be >= 1")
    if opts.eps is not None and not 0 <= opts.eps <= 1:
        raise UserError(f"invalid evaluation eps {opts.eps!r} in {where}: must be in [0, 1] pixel units")
    for key in ("batch_size", "steps", "restarts"):
        if getattr(opts, key) is not None and getattr(opts, key) < 1:
            raise UserError(f"invalid evaluation {key} {getattr(opts, key)!r} in {where}: must be >= 1")
    try:  # what `evaluate` would refuse after the training was spent (e.g. steps for a clean evaluation)
        EvalSpec.create(attack, opts.eps, "linf", opts.steps, None, opts.restarts,
                        256 if opts.batch_size is None else opts.batch_size, opts.seed)
    except UserError as exc:
        raise UserError(f"invalid evaluation in {where}: {exc}") from None
    return EvaluationOptions(**{**opts.__dict__, "attack": attack})


# Executor values that must be at least 1 (0 would hang a sweep, or ask Slurm for nothing). GPU counts may be 0
# (a CPU job); the type check already refuses a negative one.
_POSITIVE_EXECUTOR_KEYS = ("max_parallel", "array_parallelism", "timeout_min", "tasks_per_job", "cpus_per_task",
                           "mem_gb")


def _parse_executor(value: Any, where: str) -> ExecutorOptions:
    opts = _parse_options(ExecutorOptions, value or {}, EXECUTOR_KEYS, "executor", where)
    for key in _POSITIVE_EXECUTOR_KEYS:
        v = getattr(opts, key)
        if v is not None and v <= 0:
            raise UserError(f"invalid executor.{key} {v!r} in {where}: must be > 0")
    return opts


def _parse_options(cls, value: Any, keys: tuple[str, ...], section: str, where: str):
    if not isinstance(value, Mapping):
        raise UserError(f"`{section}` in {where} must be a mapping; valid keys: {', '.join(keys)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, raw in value.items():
        key = str(key).replace("-", "_")
        if key not in keys:
            raise UserError(f"unknown key {key!r} in {section} of {where}; valid: {', '.join(keys)}")
        kwargs[key] = _coerce_option(key, raw, hints[key], f"{section}.{key} in {where}")
    return cls(**kwargs)


def _coerce_option(key: str, raw: Any, hint: Any, what: str) -> Any:
    args = typing.get_args(hint)
    # Unwrap Optional only: dict[str, Any] and tuple[str, ...] keep their own origin (their args are not Optional).
    base = next((a for a in args if a is not type(None)), hint) if type(None) in args else hint
    if raw is None:
        if type(None) in args:
            return None
        raise UserError(f"invalid {what}: a value is required")
    origin = typing.get_origin(base) or base
    if origin is dict:
        if not isinstance(raw, Mapping):
            raise UserError(f"invalid {what}: expected a mapping like {{account: myproj}}")
        return {str(k): v for k, v in raw.items()}
    if origin is tuple:
        if isinstance(raw, str):
            return (raw,)
        if not isinstance(raw, list):
            raise UserError(f"invalid {what}: expected a list of strings")
        return tuple(str(x) for x in raw)
    if base is bool:
        if isinstance(raw, bool):
            return raw
        raise UserError(f"invalid {what} {raw!r}: expected true or false")
    if base is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or int(raw) != raw or raw < 0:
            raise UserError(f"invalid {what} {raw!r}: expected a non-negative integer")
        return int(raw)
    if base is float:
        value = parse_fraction(raw, what=what)
        if value < 0:
            raise UserError(f"invalid {what} {raw!r}: must be >= 0")
        return value
    return str(raw)
