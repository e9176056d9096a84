"""The store is an index of the run folders: what a study records live equals what `runs sync` rebuilds.

A small study shaped like `make demo`'s (standard and PGD training selected on validation images, a
clean evaluation of every run, APGD-CE of the adversarial ones, AutoAttack of the two most robust) on
synthetic data; then every run folder is synced into a fresh store and the two rows are compared field by
field, with the evaluations, and with the headline summary.json states.
"""
import contextlib
import io
import json
import math

import pytest
import yaml

from robustscale.schema import RUN_COLUMNS
from robustscale.store import open_store
from robustscale.store.sync import run_dirs_under, sync_all

SUBSETS = [48, 64, 80, 96, 112]  # 5 runs per family: the smallest grid a study fits


@pytest.fixture(scope="module")
def demo_like_study(tmp_path_factory, mnist_like_dir):
    from robustscale.cli import main

    tmp = tmp_path_factory.mktemp("live-vs-sync")
    spec = {
        "name": "demo-like",
        "base": {"dataset": "fashion_mnist", "data_dir": str(mnist_like_dir), "model": "wide_resnet10_1",
                 "eps": 0.1, "epochs": 1, "batch_size": 32, "lr_base": 0.4, "eval_subset": 0, "val_size": 16,
                 "select": "best", "select_split": "val", "workers": 0, "progress": False, "energy": False},
        "zip": [{"method": ["standard", "pgd"], "eval_attack_steps": [0, 2], "attack_steps": [1, 1]},
                {"train_subset": SUBSETS}],
        "name_template": "{method}-n{train_subset}",
        "output_dir": str(tmp / "runs"),
        "evaluation": {"attack": "clean", "n_examples": 48},
        "executor": {"max_parallel": 1},
        "cost": {"device_type": "cpu"},
        "study": {"evaluations": [{"attack": "apgd-ce", "n_examples": 24, "where": {"method": "pgd"}},
                                  {"attack": "aa-standard", "n_examples": 8, "where": {"method": "pgd"},
                                   "strongest": 2, "by": "apgd_ce_robust_acc"}],
                  "fits": {"standard": {"where": {"method": "standard"}, "y": "clean_acc"},
                           "adversarial": {"where": {"method": "pgd"}, "y": "apgd_ce_robust_acc"}},
                  "laws": ["power"], "targets": [90], "bootstrap": 10, "seed": 0, "eval_workers": 1},
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    import torch

    err = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and immune to a busy machine's spin-waits
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(["study", str(path), "--executor", "inline", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err.getvalue()
    return tmp / "runs"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b  # the same float64 from the same files: exact
    return a == b or (a is None and isinstance(b, float) and math.isnan(b)) or (
        b is None and isinstance(a, float) and math.isnan(a))


EVAL_FIELDS = ("attack", "eps", "norm", "n_examples", "clean_acc", "robust_acc", "eval_flops", "wall_seconds",
               "device_hours", "energy_kwh")


def test_live_rows_equal_the_rows_sync_rebuilds(demo_like_study, tmp_path):
    runs_dir = demo_like_study
    live = open_store(runs_dir / "runs.db", readonly=True)
    rebuilt = open_store(tmp_path / "rebuilt.db")
    folders = run_dirs_under(runs_dir)
    assert len(folders) == 2 * len(SUBSETS)
    assert {r.outcome for r in sync_all(rebuilt, folders)} == {"inserted"}

    for folder in folders:
        name = folder.name
        a, b = live.get_run(name), rebuilt.get_run(name)
        for col in (*RUN_COLUMNS, "epochs_done", "run_dir", "config_hash"):
            assert _same(a[col], b[col]), (name, col, a[col], b[col])
        assert len(a["evaluations"]) == len(b["evaluations"]) == len(list((folder / "eval").glob("*.json")))
        key = lambda e: e["attack"]  # noqa: E731  (one evaluation per attack in this study)
        for ea, eb in zip(sorted(a["evaluations"], key=key), sorted(b["evaluations"], key=key)):
            for col in EVAL_FIELDS:
                assert _same(ea[col], eb[col]), (name, ea["attack"], col, ea[col], eb[col])
        # summary.json states the same headline (the same rule wrote it)
        summary = json.loads((folder / "summary.json").read_text())
        for col in ("clean_acc", "clean_acc_n_examples", "pgd_robust_acc", "apgd_ce_robust_acc",
                    "apgd_ce_robust_acc_n_examples", "aa_robust_acc", "aa_n_examples", "collapsed", "eval_flops"):
            assert _same(summary[col], a[col]), (name, col, summary[col], a[col])


def test_every_headline_is_there_with_its_count(demo_like_study):
    """Standard training's headline is its clean accuracy (from the clean evaluation on 48 test images,
    not the 16 validation images of its checkpoint selection); PGD's adds APGD-CE's and, for two, AutoAttack's."""
    st = open_store(demo_like_study / "runs.db", readonly=True)
    frame = st.runs_frame().set_index("name")
    for name, row in frame.iterrows():
        claim = json.loads((demo_like_study / name / "eval" / "clean.json").read_text())
        assert row["clean_acc"] == claim["clean_acc"] and row["clean_acc_n_examples"] == 48
        if row["method"] == "pgd":
            apgd = json.loads((demo_like_study / name / "eval" / "apgd-ce-0.1.json").read_text())
            assert row["apgd_ce_robust_acc"] == apgd["robust_acc"] and row["apgd_ce_robust_acc_n_examples"] == 24
        else:
            assert math.isnan(row["apgd_ce_robust_acc"])
    assert (frame["aa_n_examples"] == 8).sum() == 2
    # eval_flops: training's per-epoch checks plus every evaluation, each counted once
    for name, row in frame.iterrows():
        summary = json.loads((demo_like_study / name / "summary.json").read_text())
        spent = sum(json.loads(p.read_text())["eval_flops"] for p in (demo_like_study / name / "eval").glob("*.json"))
        assert row["eval_flops"] == pytest.approx(summary["training_check"]["eval_flops"] + spent, rel=1e-12)
