"""The wall-clock bill of a study with a ``scaling:`` section, before anything runs (``robustscale study
SPEC --bill``): training, per-epoch validation, every evaluation and the closing experiment.

FLOPs are measured (``robustscale flops``: the training step of each model, method and k; the attack
step = the PGD-1 step less the standard step, i.e. one forward + input-only backward); times are those
FLOPs over the machine's measured rates in ``study.scaling`` (``train_flop_rate`` for training and
validation, ``eval_flop_rate`` for attacks and clean evaluations; one number, or one per model: the
smallest nets run several times slower per FLOP). The rates are whole-machine rates,
so the sum over runs is the wall time when the runs keep every core busy (``--max-parallel`` jobs at
once). An attack is billed as if every test image were attacked for every iteration (APGD-CE skips the
images the model already gets wrong: an upper bound). Fits and the report are not billed (seconds to a
few minutes).

The closing experiment is billed before it is planned: ``len(verify_seeds)`` runs of
``budget_factor`` x the largest run's training FLOPs, trained and evaluated on whichever model it may
choose takes longest.
"""
from __future__ import annotations

from functools import partial
from typing import Any

from ..compute.zoo import model_rows
from ..config import TrainConfig
from ..data.splits import resolve_val_size
from ..errors import UserError
from ..sweep.estimate import StepFlopsCache, images_seen
from .scaling import rate_of

DEFAULT_STEPS = {"apgd-ce": 100, "pgd": 10}  # robustscale.evaluation.spec.DEFAULT_STEPS, by attack name


class MeasuredFlops:
    """Measured FLOPs per image: forward, attack step and training step, per (model, method, k)."""

    def __init__(self, dataset: str, cache: StepFlopsCache | None = None):
        self.dataset = dataset
        self.cache = cache or StepFlopsCache()
        self._forward: dict[str, float] = {}

    def forward(self, model: str) -> float:
        if model not in self._forward:
            self._forward[model] = float(model_rows([model], self.dataset)[0]["forward_flops_per_image"])
        return self._forward[model]

    def step(self, model: str, method: str, k: int) -> float:
        cfg = TrainConfig.from_dict({"model": model, "dataset": self.dataset, "method": method,
                                     "attack_steps": max(int(k), 1)}, source="bill")
        return float(self.cache.get(cfg))

    def attack_step(self, model: str) -> float:
        return self.step(model, "pgd", 1) - self.step(model, "standard", 1)

    def evaluation(self, model: str, ev: dict[str, Any]) -> float:
        """FLOPs of one evaluation of ``model`` (every image attacked every iteration)."""
        n = int(ev.get("n_examples") or 10000)
        attack = str(ev["attack"])
        if attack == "clean":
            return n * self.forward(model)
        if attack not in DEFAULT_STEPS:
            raise UserError(f"the bill knows clean, PGD and APGD-CE evaluations, not {attack!r}")
        steps = int(ev.get("steps") or DEFAULT_STEPS[attack])
        return n * (steps * self.attack_step(model) + self.forward(model))


def _applies(cfg: TrainConfig, where: dict[str, list[str]]) -> bool:
    d = cfg.to_dict()
    return all(str(d.get(k)) in v for k, v in where.items())


def study_bill(spec, opts, cache: StepFlopsCache | None = None) -> dict[str, Any]:
    """Per run and in total: FLOPs and seconds of training, validation and evaluation, and the closing
    experiment's (see the module docstring). UserError when the spec has no rates to bill with."""
    sc = opts.scaling
    if sc is None or sc.train_flop_rate is None or sc.eval_flop_rate is None:
        raise UserError(f"study {spec.name} has no study.scaling.train_flop_rate / eval_flop_rate to bill with")
    flops = MeasuredFlops(spec.runs[0].cfg.dataset, cache)
    evaluations = ([{**spec.evaluation.kwargs(), "where": {}}] if spec.evaluation is not None else []) + \
        [dict(e) for e in opts.evaluations]
    rows = []
    train_rate = partial(rate_of, sc.train_flop_rate, what="study.scaling.train_flop_rate")
    eval_rate = partial(rate_of, sc.eval_flop_rate, what="study.scaling.eval_flop_rate")
    for run in spec.runs:
        cfg = run.cfg
        seen = images_seen(cfg)
        train = flops.step(cfg.model, cfg.method.value, cfg.attack_steps) * seen
        val_images = resolve_val_size(cfg.val_size, cfg.train_subset or seen // cfg.epochs)
        attack_steps_val = cfg.eval_attack_steps if cfg.method.value != "standard" else 0
        val = cfg.epochs * val_images * (attack_steps_val * flops.attack_step(cfg.model) + flops.forward(cfg.model))
        ev = sum(flops.evaluation(cfg.model, e) for e in evaluations if _applies(cfg, e.get("where") or {}))
        rows.append({"name": run.name, "model": cfg.model, "method": cfg.method.value,
                     "attack_steps": cfg.attack_steps, "epochs": cfg.epochs, "images_seen": seen,
                     "train_flops": train, "val_flops": val, "eval_flops": ev,
                     "seconds": (train + val) / train_rate(cfg.model) + ev / eval_rate(cfg.model)})
    verify = _verify_bill(spec, opts, rows, flops, evaluations, train_rate, eval_rate)
    grid_s = sum(r["seconds"] for r in rows)
    total_h = (grid_s + verify["seconds"]) / 3600.0
    return {"study": spec.name, "runs": rows, "grid_seconds": grid_s, "verify": verify, "total_hours": total_h,
            "max_hours": sc.max_hours, "train_flop_rate": sc.train_flop_rate, "eval_flop_rate": sc.eval_flop_rate,
            "within_limit": None if sc.max_hours is None else total_h <= sc.max_hours}


def _verify_bill(spec, opts, rows, flops: MeasuredFlops, evaluations, train_rate, eval_rate) -> dict[str, Any]:
    sc = opts.scaling
    cfgs = {r.name: r.cfg for r in spec.runs}
    where = [r for r in rows if _applies(cfgs[r["name"]], sc.where)]
    if not where:
        raise UserError(f"study.scaling.where of {spec.name} selects none of its runs")
    largest = max(where, key=lambda r: r["train_flops"])
    models = sc.models or sorted({r["model"] for r in where})
    train = sc.budget_factor * largest["train_flops"]
    # Validation is a fixed share of the images seen, so its FLOPs scale with the forward pass of the model.
    val_per_forward = sc.budget_factor * largest["val_flops"] / flops.forward(largest["model"])
    worst = None
    for model in models:
        template = cfgs[largest["name"]].replace(model=model)
        ev = sum(flops.evaluation(model, e) for e in evaluations if _applies(template, e.get("where") or {}))
        seconds = (train + val_per_forward * flops.forward(model)) / train_rate(model) + ev / eval_rate(model)
        if worst is None or seconds > worst[0]:
            worst = (seconds, model, ev)
    per_seed, model, ev = worst
    return {"seeds": len(sc.verify_seeds), "train_flops_per_seed": train, "model": model,
            "eval_flops_per_seed": ev, "seconds": per_seed * len(sc.verify_seeds)}


def format_bill(bill: dict[str, Any]) -> str:
    """The bill as a few lines: totals by part and the limit."""
    rows = bill["runs"]
    tr = sum(r["train_flops"] + r["val_flops"] for r in rows)
    ev = sum(r["eval_flops"] for r in rows)
    v = bill["verify"]
    lines = [f"study {bill['study']}: {len(rows)} runs in the grid, then {v['seeds']} planned runs",
             f"  grid: {tr / 1e12:.3g} TFLOPs of training + validation at {_rates(bill['train_flop_rate'])}, "
             f"{ev / 1e12:.3g} TFLOPs of evaluation at {_rates(bill['eval_flop_rate'])}: "
             f"{bill['grid_seconds'] / 60:.0f} min",
             f"  planned runs: {v['seeds']} x {v['train_flops_per_seed'] / 1e12:.3g} TFLOPs of training, billed on "
             f"the slowest model it may choose ({v['model']}): {v['seconds'] / 60:.0f} min",
             f"  total: {bill['total_hours']:.2f} h of this machine (fits and report not included)"]
    if bill["max_hours"] is not None:
        lines.append(f"  limit: {bill['max_hours']:g} h ({'within' if bill['within_limit'] else 'OVER'})")
    return "\n".join(lines)


def _rates(rates: dict[str, float]) -> str:
    if set(rates) == {"default"}:
        return f"{rates['default']:.3g} FLOP/s"
    return f"{min(rates.values()):.3g}-{max(rates.values()):.3g} FLOP/s by model"
