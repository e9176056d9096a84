"""`robustscale runs ...` and the hooks train/evaluate call."""
from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from robustscale.config import TrainConfig
from robustscale.schema import RUN_COLUMNS
from robustscale.store import (open_store, record_epoch, record_evaluation, record_run_end, record_run_start,
                               store_url_for)

SUMMARY = {"status": "completed", "train_flops": 5e12, "wall_seconds": 30.0, "device_hours": 30 / 3600,
           "train_images_seen": 256, "clean_acc": 60.0, "pgd_robust_acc": 30.0}


def make_cfg(tmp_path, name: str, **kw) -> TrainConfig:
    return TrainConfig(name=name, output_dir=str(tmp_path / "runs"), model="wide_resnet16_1", dataset="fashion_mnist",
                       eps=0.1, attack_steps=2, epochs=2, **kw)


@pytest.fixture
def filled(tmp_path):
    """A store with a done PGD run, a done TRADES run with an evaluation, and a failed run."""
    db = tmp_path / "runs" / "runs.db"
    st = open_store(db)
    for name, kw in (("pgd-a", {}), ("trades-b", {"method": "trades"}), ("broken", {"seed": 3})):
        c = make_cfg(tmp_path, name, **kw)
        st.start_run(c, tmp_path / "runs" / name)
        st.record_epoch(name, 1, {"train_loss": 2.0, "clean_acc": 50.0})
        if name == "broken":
            st.finish_run(name, status="failed", error="RuntimeError: out of memory")
        else:
            st.finish_run(name, SUMMARY)
    st.record_evaluation("trades-b", {"attack": "aa-standard", "eps": 0.1, "n_examples": 100, "clean_acc": 61.0,
                                      "robust_acc": 25.0, "eval_flops": 1e10})
    return db


def test_list_show_and_filters(cli, filled):
    code, out, err = cli("runs", "list", "--store", filled)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "status", "source", "model"] and "AA %" in lines[0]
    assert [ln.split()[0] for ln in lines[1:4]] == ["pgd-a", "trades-b", "broken"]
    assert "3 runs (2 done, 1 failed)" in out
    code, out, _ = cli("runs", "list", "--store", filled, "--where", "method=trades", "--json")
    recs = json.loads(out)
    assert code == 0 and [r["name"] for r in recs] == ["trades-b"]
    assert recs[0]["aa_robust_acc"] == 25.0 and recs[0]["clean_acc"] == 61.0 and recs[0]["status"] == "done"
    code, out, _ = cli("runs", "list", "--store", filled, "--where", "status=failed", "--json")
    assert [r["name"] for r in json.loads(out)] == ["broken"] and json.loads(out)[0]["error"].startswith("Runtime")

    code, out, _ = cli("runs", "show", "trades-b", "--store", filled)
    out_text = out
    assert code == 0 and "run trades-b" in out and "epochs:" in out and "evaluations:" in out and "aa-standard" in out
    code, out, _ = cli("runs", "show", "trades-b", "--store", filled, "--json")
    shown = json.loads(out)
    assert shown["config"]["method"] == "trades" and shown["evaluations"][0]["robust_acc"] == 25.0
    # every accuracy with the Wilson 95% interval of its evaluation's image count (100 here)
    from robustscale.intervals import wilson_interval

    ev = shown["evaluations"][0]
    assert ev["n_examples"] == 100
    assert ev["robust_acc_ci"] == pytest.approx(list(wilson_interval(25, 100)), abs=1e-12)
    assert ev["clean_acc_ci"] == pytest.approx(list(wilson_interval(61, 100)), abs=1e-12)
    lo, hi = wilson_interval(25, 100)
    assert f"25.0 [{lo:.1f}, {hi:.1f}]" in out_text


@pytest.mark.parametrize("args,message", [
    (["runs", "show", "trades", "--store", "{db}"], "no run named 'trades' .*similar: trades-b"),
    (["runs", "list", "--store", "{db}", "--where", "colour=red"], "unknown filter key 'colour'"),
    (["runs", "list", "--store", "{missing}"], "no results store at .*missing.db"),
    (["runs", "list", "--store", "postgresql://u:pw@127.0.0.1:1/x"], "cannot reach store postgresql"),
    (["runs", "export", "--store", "{db}", "-o", "{nodir}/x.csv"], "output folder .* does not exist"),
])
def test_runs_user_errors(cli, filled, tmp_path, args, message):
    import re

    subs = {"db": str(filled), "missing": str(tmp_path / "missing.db"), "nodir": str(tmp_path / "nope")}
    code, out, err = cli(*[a.format(**subs) for a in args])
    assert code == 2 and out == "" and err.count("\n") == 1 and re.search(message, err), err
    assert "pw" not in err and not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_is_fit_ready(cli, filled, tmp_path, fmt):
    path = tmp_path / f"runs.{fmt}"
    code, out, err = cli("runs", "export", "--store", filled, "-o", path)
    assert code == 0 and "wrote 2 runs" in out, err
    df = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    assert list(df.columns) == list(RUN_COLUMNS)
    assert list(df["name"]) == ["pgd-a", "trades-b"]  # the failed run is not fit material
    assert list(df["train_flops"]) == [5e12, 5e12] and list(df["aa_robust_acc"].isna()) == [True, False]
    assert df["collapsed"].tolist()[1] == False  # noqa: E712  (25% AutoAttack)
    code, _, _ = cli("runs", "export", "--store", filled, "-o", path, "--status", "all")
    df = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    assert len(df) == 3 and sorted(df["status"]) == ["done", "done", "failed"]


def test_fit_reads_the_store(filled):
    io = pytest.importorskip("robustscale.scaling.io")
    for source in (str(filled), f"sqlite:///{filled}"):
        df = io.load_runs(source)
        assert list(df["name"]) == ["pgd-a", "trades-b"] and df["train_flops"].tolist() == [5e12, 5e12]


def test_import_paper_is_idempotent(cli, tmp_path, paper_runs_csv):
    scaling = pytest.importorskip("robustscale.scaling")
    db = tmp_path / "paper.db"
    code, out, err = cli("runs", "import-paper", "--path", paper_runs_csv, "--store", db, "--json")
    assert code == 0, err
    assert json.loads(out) == {"store": f"sqlite:///{db}", "source": "debenedetti2024", "runs": 319,
                               "inserted": 319, "updated": 0, "unchanged": 0}
    code, out, _ = cli("runs", "import-paper", "--path", paper_runs_csv, "--store", db)
    assert code == 0 and "319 runs of debenedetti2024" in out and "0 new, 0 updated, 319 unchanged" in out
    frame = open_store(db, create=False).runs_frame().set_index("name")
    want = scaling.load_paper_runs(paper_runs_csv).set_index("name")
    assert len(frame) == 319 and set(frame["source"]) == {"debenedetti2024"}
    for col in ("train_flops", "aa_robust_acc", "clean_acc", "epochs", "attack_steps", "model_parameters"):
        assert frame.loc[want.index, col].astype(float).tolist() == pytest.approx(want[col].astype(float).tolist()), col
    assert (frame.loc[want.index, "method"] == want["method"]).all()
    code, out, _ = cli("runs", "list", "--store", db, "--where", "source=debenedetti2024", "--where", "at_steps=10",
                       "--json")
    assert code == 0 and len(json.loads(out)) == int((want["attack_steps"] == 10).sum())
    code, out, err = cli("runs", "import-paper", "--path", tmp_path / "nope.csv", "--store", db)
    assert code == 2 and "not found" in err


# ---------------------------------------------------------------------- hooks
def test_hooks_record_a_run_in_the_default_store(tmp_path, monkeypatch):
    import robustscale.store.hooks as hooks

    monkeypatch.setattr(hooks, "HEARTBEAT_S", 0.05)
    c = make_cfg(tmp_path, "hooked")
    run_dir = tmp_path / "runs" / "hooked"
    assert store_url_for(c) == f"sqlite:///{tmp_path / 'runs' / 'runs.db'}"
    record_run_start(c, run_dir)
    st = open_store(tmp_path / "runs" / "runs.db", create=False)
    first = st.get_run("hooked")["heartbeat_at"]
    time.sleep(0.4)
    assert st.get_run("hooked")["heartbeat_at"] > first  # the heartbeat thread runs
    record_epoch(c, 1, {"epoch": 1, "train_loss": 1.5, "train_flops": 1e12, "wall_seconds": 3.0})
    record_run_end(c, SUMMARY)
    beat = st.get_run("hooked")["heartbeat_at"]
    time.sleep(0.2)
    row = st.get_run("hooked")
    assert row["heartbeat_at"] == beat  # stopped at the end
    assert row["status"] == "done" and row["train_flops"] == 5e12 and row["epoch_metrics"][0]["train_loss"] == 1.5
    # An evaluation found through the run folder (config.yaml), as evaluate_run does.
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(json.dumps(c.to_dict()))
    record_evaluation(run_dir, {"attack": "pgd", "eps": 0.1, "n_examples": 50, "clean_acc": 62.0, "robust_acc": 31.0})
    assert st.get_run("hooked")["pgd_robust_acc"] == 31.0
    # A failure is recorded as such.
    c2 = make_cfg(tmp_path, "crashing", seed=9)
    record_run_start(c2, None)
    record_run_end(c2, status="failed", error="ValueError: bad batch\n  more lines")
    assert st.get_run("crashing")["status"] == "failed" and st.get_run("crashing")["error"] == "ValueError: bad batch"


def test_hooks_adopt_an_unrecorded_run_and_respect_opt_out(tmp_path, monkeypatch):
    c = make_cfg(tmp_path, "old")
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(json.dumps(c.to_dict()))
    (run_dir / "summary.json").write_text(json.dumps(SUMMARY))
    record_evaluation(run_dir, {"attack": "pgd", "eps": 0.1, "n_examples": 10, "clean_acc": 1.0, "robust_acc": 0.5})
    row = open_store(tmp_path / "runs" / "runs.db", create=False).get_run("old")
    assert row["status"] == "done" and row["train_flops"] == 5e12 and row["pgd_robust_acc"] == 0.5

    other = tmp_path / "elsewhere"
    c3 = make_cfg(tmp_path, "quiet").replace(output_dir=str(other))
    monkeypatch.setenv("ROBUSTSCALE_STORE", "none")
    record_run_start(c3, None)
    record_run_end(c3, SUMMARY)
    monkeypatch.delenv("ROBUSTSCALE_STORE")
    monkeypatch.setenv("RANK", "1")  # a DDP rank other than 0 never writes
    record_run_start(c3, None)
    record_run_end(c3, SUMMARY)
    assert not other.exists()
