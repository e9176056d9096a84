"""The reports' tables as a browser lays them out: at a 1,100 px window every table fits the page (text and
intervals wrap inside their cells; what cannot wrap scrolls inside its own box). Headless Chromium
(`--dump-dom`) measures the rendered page; skipped where Chromium is not installed."""
from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

from robustscale.leaderboard.report import ledger_table
from robustscale.report import Section, write_html
from robustscale.study.next import next_table
from robustscale.study.report import runs_table, targets_table

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

# Written into the page: for every table, whether it is inside its own box and how far it sticks out of the page.
MEASURE = """<script>
const page = document.body.getBoundingClientRect().right;
const out = [];
document.querySelectorAll('table').forEach((t, i) => {
  const box = t.parentElement;
  out.push([i, box.classList.contains('tbl') ? 1 : 0, Math.round(t.getBoundingClientRect().right - page),
            Math.round(box.scrollWidth - box.clientWidth)].join(':'));
});
document.body.setAttribute('data-tables', out.join(' '));
</script>"""


def _layout(path, width: int = 1100) -> list[tuple[int, int, int, int]]:
    html = path.read_text()
    path.write_text(html.replace("</body>", MEASURE + "</body>"))
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={width},2000", "--virtual-time-budget=2000", "--dump-dom",
                           path.resolve().as_uri()], capture_output=True, text=True, timeout=300)  # a loaded machine: slow
    found = re.search(r'data-tables="([^"]*)"', proc.stdout)
    assert found, proc.stderr[-2000:]
    return [tuple(map(int, item.split(":"))) for item in found.group(1).split()]


def _study_runs():
    rows = []
    for family in ("standard training (clean)", "PGD adversarial training (APGD-CE)"):
        for n in (1024, 2048, 4096, 8192, 16384):
            row = {"family": family, "name": f"{'pgd' if 'PGD' in family else 'standard'}-n{n}-e4",
                   "train_images": n, "epochs": 4, "train_flops": 3.1e11 * n / 1024, "wall_seconds": 61.2,
                   "energy_kwh": 0.00123, "selection_split": "val", "selected_epoch": 4,
                   "selection_metric": "pgd_robust_acc"}
            for m in ("clean_acc", "pgd_robust_acc", "apgd_ce_robust_acc", "aa_robust_acc"):
                row.update({m: 61.1, f"{m}_ci_low": 58.0, f"{m}_ci_high": 64.1, f"{m}_n_examples": 1000})
            rows.append(row)
    return pd.DataFrame(rows)


def _next_records():
    recipe = {"model": "wide_resnet10_1", "epochs": 8, "attack_steps": 5, "predicted_acc": 71.1,
              "predicted_acc_ci": (61.8, 71.5)}
    budgets = [{"budget_flops": f, "factor_vs_largest_run": f / 1e13, "identified": True, "model_parameters": 77850,
                "samples_seen": 131072, "samples_seen_ci": (65536, 262144), "epochs": 8, "attack_steps": 5,
                "predicted_acc": 71.1, "predicted_acc_ci": (61.8, 71.5), "recipes": [recipe]} for f in (3e13, 1e14)]
    conditional = {"budget_flops": 8.56e13, "factor_vs_largest_run": 10, "identified": False,
                   "conditional": {"model_parameters": 77562, "samples_seen": 6.55e5, "epochs": 40, "attack_steps": 2,
                                   "predicted_acc": 72.1, "predicted_acc_ci": (64.6, 80.2),
                                   "label": "conditional plan, N held at the observed levels: not the optimum"}}
    return [{"label": "PGD adversarial training (APGD-CE)", "budgets": budgets + [conditional], "epoch_images": 16384},
            {"label": "standard training (clean)", "budgets": [], "status": "not identified",
             "reason": "the runs vary 1 of the 3 inputs (train_images_seen); model_parameters and attack_steps "
                       "enter as levels, so the joint optimum is not identified"}]


def _ledger():
    rows = [{"name": f"Wang2023Better_WRN-70-16_with_20M_generated_images_{i}", "year": 2023,
             "architecture": "WideResNet-70-16 (SiLU)", "model_parameters": 2.67e8, "aa_robust_acc": 70.69,
             "clean_acc": 93.25, "train_flops_low": 1.1e21, "train_flops_high": 3.3e22, "device_hours": 2.9e4,
             "recipe_status": "sourced: paper Table 9, 2000 epochs x 1024 batch, TRADES-10, EMA 0.995"}
            for i in range(5)]
    # Names without a space or hyphen, and a status naming another entry: the leaderboard's own long cells.
    rows += [{**rows[0], "name": f"Gowal2021Improving_70_16_ddpm_100m_{i}", "architecture": "WideResNet-70-16",
              "recipe_status": "range; inference-time operator on Bartoldson2024Adversarial_WRN_94_16: its training "
                               "compute"} for i in range(3)]
    return pd.DataFrame(rows)


def _target_records():
    """As the demo's study.json has them: a target reached by extrapolation, and two refused by the rulebook."""
    reached = {"target": 70.0, "status": "ok", "reachable": True, "compute_flops": 2.31e13,
               "compute_flops_ci": [1.51e13, 3.03e13], "factor_vs_largest_run": 2.7, "extrapolation": True,
               "reach": "extrapolation 2.7x the largest fitted run's compute, not back-tested",
               "device_hours": 0.0741, "energy_kwh": 0.0063, "cloud_usd_high": 0.0504}
    refused = {"status": "beyond reach", "reachable": False,
               "reason": "the target's compute lies beyond the refusal limit of 10x the largest fitted run's compute"}
    return [{"law": "error-power", "label": "PGD adversarial training (APGD-CE)",
             "targets": [reached, {"target": 80.0, **refused}, {"target": 90.0, **refused}]}]


def test_report_tables_fit_a_1100px_page(tmp_path):
    sections = [Section("Runs", table=runs_table(_study_runs(), ["clean_acc", "pgd_robust_acc", "apgd_ce_robust_acc",
                                                                  "aa_robust_acc"])),
                Section("What to run next", table=next_table(_next_records()), wrap=(3, 8)),
                Section("The ledger", table=ledger_table(_ledger(), 1e14)),
                Section("Compute to reach the targets", table=targets_table(_target_records()))]
    path = write_html(tmp_path / "report.html", "Tables", sections)
    layout = _layout(path)
    assert len(layout) == 4
    for index, boxed, past_page, scroll in layout:
        assert boxed, f"table {index} is not in its own box"
        assert past_page <= 0, f"table {index} ends {past_page} px past the page"
        assert scroll <= 0, f"table {index} needs {scroll} px of scrolling at 1,100 px"
