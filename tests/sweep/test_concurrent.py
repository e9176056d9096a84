"""Two `sweep run` of one spec on one store at once share `max_parallel` and never redo a run.

(Without the store's slots the two sweeps ran four jobs at once against max_parallel 2.)"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest
import yaml

from robustscale.store import open_store
from robustscale.sweep.runner import slurm_share

MAX_PARALLEL = 2


def test_two_sweeps_share_max_parallel_and_do_each_run_once(tmp_path, mnist_like_dir):
    base = {"dataset": "fashion_mnist", "model": "wide_resnet16_1", "train_subset": 64, "epochs": 1,
            "batch_size": 64, "attack_steps": 1, "eps": 0.1, "eval_subset": 32, "eval_attack_steps": 1,
            "workers": 0, "progress": False, "energy": False, "channels_last": False,
            "data_dir": str(mnist_like_dir)}
    out = tmp_path / "out"
    spec = tmp_path / "twice.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "twice", "base": base, "grid": {"method": ["pgd", "fgsm_rs"]}, "seeds": 2,
        "name_template": "{method}-s{seed}", "output_dir": str(out),
        "evaluation": {"attack": "pgd", "n_examples": 32, "steps": 1, "batch_size": 32},
        "executor": {"max_parallel": MAX_PARALLEL, "cpus_per_task": 1, "timeout_min": 20}}, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ROBUSTSCALE_STORE", None)
    cmd = [sys.executable, "-m", "robustscale", "sweep", "run", str(spec), "--no-progress"]
    sweeps = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True) for _ in range(2)]
    try:
        texts = [p.communicate(timeout=300)[0] for p in sweeps]
    finally:  # a hung sweep must not leave its jobs running
        for p in sweeps:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in sweeps] == [0, 0], texts

    st = open_store(out / "runs.db", readonly=True)
    rows = {r["name"]: r for r in st.list_runs()}
    assert sorted(rows) == ["fgsm_rs-s0", "fgsm_rs-s1", "pgd-s0", "pgd-s1"]
    evals = st.evaluations_of(rows)
    # A job spans training's start (started_at) to its evaluation's record; the slot covers both.
    spans = []
    for name, row in rows.items():
        assert row["status"] == "done", (name, texts)
        assert len(evals[name]) == 1, (name, evals[name])
        spans.append((row["started_at"], evals[name][0]["created_at"]))
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert 1 <= peak <= MAX_PARALLEL, spans

    # Each run trained in one session and finished by exactly one of the two sweeps.
    for name in rows:
        env_json = yaml.safe_load((out / name / "env.json").read_text())
        assert len(env_json["sessions"]) == 1, name
        finishers = [t for t in texts if any(line.split()[:2] == ["done", name] for line in t.splitlines())]
        assert len(finishers) == 1, (name, texts)
    assert st.held_slots("sweep:twice") == []  # both sweeps gave their slots back


@pytest.mark.parametrize("limit, held, parallelism, dependency", [
    (4, [], 4, None),                                   # nothing else alive: the whole limit
    (4, ["101_0", "101_1"], 2, None),                   # 2 held by an earlier array: this one gets the other 2
    (2, ["101_0", "101_1"], 2, "afterany:101_0:101_1"),  # all held: start after they end, then the whole limit
    (2, ["101_0", "101_1", "102"], 2, "afterany:101_0:101_1:102"),
])
def test_a_second_slurm_submission_shares_the_array_limit(limit, held, parallelism, dependency):
    # Each Slurm array has its own % limit: at any moment the earlier submissions' alive jobs plus this array's
    # running tasks must not exceed the spec's limit.
    share = slurm_share(limit, held)
    assert (share.parallelism, share.dependency) == (parallelism, dependency)
    running_together = parallelism + (0 if dependency else len(held))
    assert running_together <= limit
