"""The model card (README.md) of an exported run: robustness claim, compute bill, recipe, provenance.

Every accuracy carries its sample size and a Wilson score 95 % interval (scipy's
``binomtest(...).proportion_ci(method="wilson")``); numbers have 3 significant digits and units.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Mapping

from ..config import Method
from ..evaluation.spec import eps_text
from ..intervals import accuracy_interval

LEVEL = 0.95


def wilson_interval(acc: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval, in percent, of an accuracy ``acc`` (percent) measured on ``n`` images
    (the project's one interval: :func:`robustscale.intervals.accuracy_interval`)."""
    lo, hi = accuracy_interval(acc, n, level)
    return float(lo), float(hi)


def _g(value: Any, unit: str = "") -> str:
    if value is None:
        return "not recorded"
    text = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
    return f"{text} {unit}".rstrip()


def _acc(acc: float | None, n: int | None) -> str:
    if acc is None:
        return "-"
    if not n:
        return f"{acc:.3g}"
    lo, hi = wilson_interval(acc, n)
    return f"{acc:.3g} [{lo:.3g}, {hi:.3g}]"


def _threat(norm: str, eps_text: str) -> str:
    return f"{'Linf' if norm == 'linf' else 'L2'}, eps = {eps_text}"


def claim_rows(claims: list[Mapping[str, Any]], check: Mapping[str, Any] | None) -> list[str]:
    """Markdown rows: one per evaluation claim, then the training-time PGD check of the exported epoch."""
    rows = []
    for c in claims:
        threat = "none (clean)" if c.get("attack") == "clean" else _threat(c.get("norm", "linf"), c.get("eps_text"))
        rows.append(f"| {c.get('attack_version') or c.get('attack')} | {c.get('dataset')} | {threat} | "
                    f"{c.get('n_examples')} | {_acc(c.get('clean_acc'), c.get('n_examples'))} | "
                    f"{_acc(c.get('robust_acc'), c.get('n_examples'))} |")
    if check is not None:
        rows.append(f"| {check['attack']} (per-epoch check during training) | {check['dataset']} | "
                    f"{check['threat']} | {check['n']} | {_acc(check['clean_acc'], check['n'])} | "
                    f"{_acc(check['robust_acc'], check['n'])} |")
    return rows


def compute_rows(summary: Mapping[str, Any], cost_model) -> list[tuple[str, str]]:
    """(what, value) rows of the training compute bill from a run's summary.json."""
    step = summary.get("step_flops") or {}
    seen = summary.get("train_images_seen")
    analytic = step.get("analytic_train_step_flops")
    flops_2024 = analytic * seen if analytic is not None and seen is not None else None
    device = f"{summary.get('device_count') or 1} x {summary.get('device_name')} ({summary.get('device_type')})"
    energy = summary.get("energy_kwh")
    if energy is None:
        estimate = cost_model.estimate_energy_kwh(summary.get("device_type"), summary.get("device_hours") or 0.0)
        energy_text = f"not measured (estimated {estimate:.3g} kWh from the device's power x device-hours)"
    else:
        energy_text = f"{energy:.3g} kWh (measured by codecarbon, IT energy)"
    emissions = summary.get("emissions_kg")
    return [
        ("training FLOPs, measured (FlopCounterMode, 2 FLOPs per MAC; attack steps backpropagate to the "
         "input only)", _g(summary.get("train_flops"), "FLOPs")),
        ("training FLOPs, 2024 study's convention (3F per forward + backward, every attack step a full one)",
         _g(flops_2024, "FLOPs")),
        ("measured / 2024 convention", _g(step.get("measured_to_analytic"))),
        ("FLOPs per training image (measured)", _g(summary.get("train_flops_per_image"), "FLOPs")),
        ("per-epoch evaluation FLOPs (not in the training figure)", _g(summary.get("eval_flops"), "FLOPs")),
        ("images seen", _g(seen)),
        ("device-hours", f"{_g(summary.get('device_hours'), 'h')} on {device}"),
        ("wall time", _g(summary.get("wall_seconds"), "s")),
        ("energy", energy_text),
        ("emissions", _g(emissions, "kg CO2e") if emissions is not None else "not measured"),
        (f"electricity cost ({summary.get('electricity_basis') or 'estimated'} energy x PUE {cost_model.pue:g} x "
         f"${cost_model.electricity_usd_per_kwh:g}/kWh)", _g(summary.get("electricity_usd"), "USD")),
        ("cloud rental cost (device-hours x rental price range; includes power)",
         f"{_g(summary.get('cloud_usd_low'))} - {_g(summary.get('cloud_usd_high'))} USD"),
        ("prices", f"preset `{cost_model.preset}` of robustscale's price table: {cost_model.description}"),
    ]


def recipe_rows(cfg, summary: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    steps = {Method.STANDARD: "", Method.FGSM_RS: " (1 step)"}.get(cfg.method, f"-{cfg.attack_steps}")
    attack = "none" if cfg.method is Method.STANDARD else (
        f"{_threat(cfg.norm.value, eps_text(cfg.eps))}, step {cfg.attack_config().step_size:.3g}"
        f"{', TRADES beta ' + format(cfg.trades_beta, 'g') if cfg.method is Method.TRADES else ''}")
    data = f"{cfg.dataset}, {_g((summary or {}).get('train_images'))} training images"
    if cfg.generated_data and cfg.generated_fraction > 0:
        data += f", {100 * cfg.generated_fraction:.3g} % of every batch generated ({Path(cfg.generated_data).name})"
    return [
        ("method", f"{cfg.method.value}{steps}"), ("training attack", attack), ("data", data),
        ("epochs", f"{cfg.epochs} ({_g((summary or {}).get('epochs_done'))} done), batch {cfg.batch_size}"),
        ("optimizer", f"{cfg.opt}, lr {cfg.learning_rate:.3g}, {cfg.sched} schedule, weight decay "
                      f"{cfg.weight_decay:g}, momentum {cfg.momentum:g}"),
        ("weight EMA", "off" if cfg.ema_decay is None else f"decay {cfg.ema_decay:g}"),
        ("augmentation", ("crop + flip" if cfg.augment else "none")
         + (f", mixup {cfg.mixup_alpha:g}" if cfg.mixup_alpha else "")
         + (f", cutmix {cfg.cutmix_alpha:g}" if cfg.cutmix_alpha else "")),
        ("seed / config hash", f"{cfg.seed} / {cfg.config_hash()}"),
    ]


def _table(rows: list[tuple[str, str]], head: tuple[str, str]) -> str:
    return "\n".join([f"| {head[0]} | {head[1]} |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows])


def render_card(*, cfg, summary: Mapping[str, Any] | None, claims: list[Mapping[str, Any]],
                check: Mapping[str, Any] | None, weights: str, epoch: Any, other_claims: int,
                timm_loadable: bool, cost_model, versions: Mapping[str, str]) -> str:
    """The README.md text (Hugging Face model card: YAML front matter, then markdown)."""
    name = cfg.name or cfg.model
    front = ["---", "library_name: timm", "pipeline_tag: image-classification", "tags:",
             "- image-classification", "- timm", "- adversarial-robustness", "- robustscale", "---", ""]
    lines = front + [f"# {name}", "",
                     f"`{cfg.model}` trained by robustscale with {cfg.method.value} on `{cfg.dataset}`; "
                     f"the `{weights}` weights (epoch {epoch}). Inputs are images in [0, 1] normalized with the "
                     f"`mean` / `std` of `config.json` (timm's data config applies them).", "",
                     "## Robustness", ""]
    rows = claim_rows(claims, check)
    if rows:
        lines += ["| evaluation | dataset | threat model | n images | clean accuracy (%) [95 % CI] | "
                  "robust accuracy (%) [95 % CI] |", "| --- | --- | --- | --- | --- | --- |", *rows, "",
                  "Accuracy on the first n test images (RobustBench convention); a point counts as robust only if "
                  "it is classified correctly both clean and under the attack. Intervals: Wilson score 95 %."]
    else:
        lines.append("No evaluation of these weights is recorded.")
    if check is not None and weights == "best":
        lines += ["", "The per-epoch check scored the epochs of this run on the same test images and `best` is the "
                  "epoch it ranked first, so that row is biased upwards; only an evaluation made after the choice "
                  "(the rows above it, `robustscale evaluate`) is a fair estimate."]
    if other_claims:
        lines += ["", f"{other_claims} evaluation(s) of other checkpoints of this run are not shown."]
    lines += ["", "## Compute bill (training)", ""]
    if summary:
        lines.append(_table(compute_rows(summary, cost_model), ("what", "value")))
    else:
        lines.append("The run has no summary.json: its compute was not recorded.")
    lines += ["", "## Recipe", "", _table(recipe_rows(cfg, summary), ("what", "value")), "",
              "The full training config is in `config.json` under `robustscale.train_config`.", "",
              "## Usage", "", "```python", "import robustscale  # registers robustscale's architectures in timm",
              "import timm", "", 'model = timm.create_model("local-dir:PATH", pretrained=True).eval()',
              "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))",
              "# for attacks in [0, 1] pixel space, the normalization inside the model:",
              "from robustscale.hub import load_timm_folder", 'model01, info = load_timm_folder("PATH")', "```"]
    if not timm_loadable:
        lines += ["", f"Note: plain `timm.create_model(\"local-dir:PATH\", pretrained=True)` does not load these "
                  f"weights for `{cfg.model}` (its entry point does not take timm's pretrained loading); use "
                  f"`robustscale.hub.load_timm_folder`."]
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines += ["", "## Provenance", "",
              f"Run `{name}` (config hash `{cfg.config_hash()}`), exported {when} by robustscale "
              f"{versions.get('robustscale')} (torch {versions.get('torch')}, timm {versions.get('timm')}).", ""]
    return "\n".join(lines)
