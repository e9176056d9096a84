"""The single-step comparison table of docs/single-step.md, from the runs of a sweep spec.

    robustscale sweep run configs/sweeps/single-step-fashion-mnist.yaml
    python benchmarks/single_step_table.py configs/sweeps/single-step-fashion-mnist.yaml [--csv out.csv]

One row per run: method, epochs, measured training FLOPs (total and per image, per step), clean and
APGD-CE accuracy with their sample size and Wilson 95% interval (the sweep's evaluation), the last
epoch's per-epoch PGD / FGSM accuracies, and the catastrophic-overfitting flag the detector raised
during training (``collapsed_epoch``, with its rule), and whether the reported (selected) checkpoint's epoch is
flagged itself (``train.collapse.flagged_at`` on metrics.jsonl, so runs recorded before the summary carried
``collapse_at_selected`` get it too). Accuracies in percent, 3 significant digits.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def wilson(correct_pct: float, n: int) -> tuple[float, float]:
    """Wilson 95% interval (percent) of an accuracy measured on ``n`` images (the package's one)."""
    from robustscale.intervals import accuracy_interval

    lo, hi = accuracy_interval(correct_pct, n)
    return float(lo), float(hi)


def _evaluation(summary: dict, attack: str) -> dict | None:
    found = [e for e in (summary.get("evaluations") or {}).values() if e.get("attack") == attack]
    return max(found, key=lambda e: e.get("n_examples") or 0) if found else None


def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _at_selected(summary: dict, history: list[dict]) -> bool | None:
    from robustscale.train.collapse import CollapseThresholds, flagged_at

    if summary.get("collapsed_epoch") is None or summary.get("selected_epoch") is None:
        return None if summary.get("collapsed_epoch") is not None else False
    return flagged_at(history, int(summary["selected_epoch"]),
                      CollapseThresholds(summary.get("collapse_ratio", 0.5), summary.get("collapse_gap", 10.0)))


def rows(spec_path: str, attack: str = "apgd-ce") -> list[dict]:
    from robustscale.sweep import load_spec

    out = []
    for run in load_spec(spec_path).runs:
        path = run.run_dir / "summary.json"
        if not path.is_file():
            out.append({"run": run.name, "status": "not run"})
            continue
        s = json.loads(path.read_text())
        ev = _evaluation(s, attack)
        history = _history(run.run_dir)
        last = history[-1] if history else {}
        row = {"run": run.name, "status": s.get("status"), "method": s.get("method"),
               "epochs": s.get("epochs_done"), "train_flops": s.get("train_flops"),
               "step_flops_per_image": (s.get("step_flops") or {}).get("train_step_flops"),
               "last_pgd_acc": last.get("pgd_robust_acc"), "last_fgsm_acc": last.get("fgsm_robust_acc"),
               "collapsed_epoch": s.get("collapsed_epoch"), "collapse_reason": s.get("collapse_reason"),
               "selected_epoch": s.get("selected_epoch"), "collapse_at_selected": _at_selected(s, history)}
        if ev is not None and ev.get("n_examples"):
            n = int(ev["n_examples"])
            lo, hi = wilson(ev["robust_acc"], n)
            row.update({"clean_acc": ev.get("clean_acc"), f"{attack}_acc": ev["robust_acc"], "n": n,
                        "ci_low": lo, "ci_high": hi})
        out.append(row)
    return out


def _fmt(value, kind: str = "g3") -> str:
    if value is None:
        return "-"
    if kind == "g3":
        return f"{value:.3g}"
    return str(value)


def markdown(table: list[dict], attack: str = "apgd-ce") -> str:
    head = ["run", "epochs", "train FLOPs", "step FLOPs/img", "clean %", f"{attack} % [95% CI]", "n",
            "last PGD %", "last FGSM %", "flagged (epoch, rule)", "reported epoch: flagged?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        if r.get("status") == "not run":
            lines.append(f"| {r['run']} | not run |" + " |" * (len(head) - 2))
            continue
        robust = "-" if r.get(f"{attack}_acc") is None else \
            f"{r[f'{attack}_acc']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
        collapsed = "no" if r.get("collapsed_epoch") is None else f"{r['collapsed_epoch']} ({r['collapse_reason']})"
        at = {True: "yes", False: "no", None: "-"}[r.get("collapse_at_selected")]
        reported = f"{_fmt(r.get('selected_epoch'), 's')}: {at}"
        lines.append("| " + " | ".join([
            r["run"], _fmt(r.get("epochs"), "s"), _fmt(r.get("train_flops")), _fmt(r.get("step_flops_per_image")),
            _fmt(r.get("clean_acc")), robust, _fmt(r.get("n"), "s"), _fmt(r.get("last_pgd_acc")),
            _fmt(r.get("last_fgsm_acc")), collapsed, reported]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", help="the sweep spec whose runs to tabulate")
    p.add_argument("--attack", default="apgd-ce", help="the evaluation to report (default: apgd-ce)")
    p.add_argument("--csv", default=None, help="also write the rows as CSV")
    args = p.parse_args(argv)
    table = rows(args.spec, args.attack)
    print(markdown(table, args.attack))
    if args.csv:
        import pandas as pd

        pd.DataFrame(table).to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
