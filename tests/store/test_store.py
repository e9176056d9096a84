"""The results store on SQLite and on a real PostgreSQL server (same tests, parametrized)."""
from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import update

from robustscale.config import TrainConfig
from robustscale.errors import UserError
from robustscale.schema import RUN_COLUMNS
from robustscale.store import open_store
from robustscale.store.core import utcnow
from robustscale.store.folder import metrics_rows
from robustscale.store.tables import SCHEMA_VERSION, meta, runs


def cfg(name: str, **kw) -> TrainConfig:
    base = dict(name=name, model="wide_resnet16_1", dataset="fashion_mnist", method="pgd", attack_steps=2, epochs=3,
                eps=0.1, output_dir="unused")
    base.update(kw)
    return TrainConfig(**base)


SUMMARY = {"status": "completed", "model_parameters": 175_000, "train_images": 128, "train_images_seen": 384,
           "train_flops": 3.0e12, "train_flops_per_image": 7.8125e9, "eval_flops": 2.0e9, "wall_seconds": 12.5,
           "device_hours": 12.5 / 3600, "device_name": "cpu", "device_count": 1, "energy_kwh": None,
           "emissions_kg": None, "electricity_usd": 1e-4, "cloud_usd_low": 2e-4, "cloud_usd_high": 3e-4,
           "clean_acc": 70.0, "pgd_robust_acc": 40.0, "compute": {"energy_kwh": 0.002}}


def claim(attack: str, n: int, clean: float, robust: float | None, eps: float = 0.1, flops: float = 1e9) -> dict:
    return {"attack": attack, "eps": eps, "norm": "linf", "n_examples": n, "clean_acc": clean, "robust_acc": robust,
            "stage_acc": {"apgd-ce": robust}, "eval_flops": flops, "wall_seconds": 1.0, "complete": True}


def test_lifecycle_and_runs_frame(store_url):
    st = open_store(store_url)
    assert st.schema_version == SCHEMA_VERSION
    c = cfg("a")
    st.start_run(c, "/tmp/a")
    row = st.get_run("a")
    assert row["status"] == "running" and row["effective_status"] == "running"
    assert row["config"] == c.to_dict() and row["config_hash"] == c.config_hash()
    assert row["torch_version"] and row["robustscale_version"] and row["host"]
    for e in (1, 2, 3):
        st.record_epoch("a", e, {"epoch": e, "train_loss": 1.0 / e, "wall_seconds": 4.0 * e, "train_flops": 1e12 * e})
    row = st.get_run("a")
    assert [m["epoch"] for m in row["epoch_metrics"]] == [1, 2, 3]
    assert row["epochs_done"] == 3 and row["wall_seconds"] == 12.0  # compute so far, from the last epoch
    assert st.runs_frame().empty  # running: never used for fitting

    st.finish_run("a", SUMMARY)
    frame = st.runs_frame()
    assert list(frame.columns) == list(RUN_COLUMNS) and len(frame) == 1
    rec = frame.iloc[0]
    assert rec["train_flops"] == 3.0e12 and rec["energy_kwh"] == 0.002  # nested compute dict is read too
    assert rec["clean_acc"] == 70.0 and rec["pgd_robust_acc"] == 40.0 and rec["synthetic_data"] == False  # noqa: E712

    # Evaluations: the largest complete one per attack at the run's eps fills the headline.
    st.record_evaluation("a", claim("pgd", 100, 71.0, 41.0))
    st.record_evaluation("a", claim("pgd", 500, 72.0, 42.0))
    st.record_evaluation("a", claim("aa-standard", 200, 73.0, 8.0))
    st.record_evaluation("a", claim("aa-standard", 50, 99.0, 99.0))  # smaller: ignored for the headline
    st.record_evaluation("a", claim("pgd", 1000, 10.0, 5.0, eps=0.2))  # other eps: ignored for the headline
    st.record_evaluation("a", claim("pgd", 500, 72.5, 42.5))  # same key: replaces the earlier one
    rec = st.runs_frame().iloc[0]
    assert rec["pgd_robust_acc"] == 42.5 and rec["aa_robust_acc"] == 8.0 and rec["aa_n_examples"] == 200
    assert rec["clean_acc"] == 72.5  # from the evaluation on the most images (PGD on 500 > AA on 200)
    assert rec["pgd_robust_acc_n_examples"] == 500 and rec["clean_acc_n_examples"] == 500  # each with its count
    assert rec["collapsed"] == True  # noqa: E712  (8% < 10%)
    assert rec["eval_flops"] == pytest.approx(2.0e9 + 5 * 1e9)  # training-time eval + 5 stored evaluations
    assert len(st.get_run("a")["evaluations"]) == 5


def test_failed_and_requeued_runs_are_not_fit_material(store_url):
    st = open_store(store_url)
    for name in ("ok", "bad", "queued", "running"):
        st.start_run(cfg(name, seed=len(name)), None, status="queued" if name == "queued" else "running")
    st.finish_run("ok", SUMMARY)
    st.finish_run("bad", SUMMARY, status="failed", error="RuntimeError: boom")
    assert list(st.runs_frame()["name"]) == ["ok"]
    assert sorted(st.runs_frame(status=None)["name"]) == ["bad", "ok", "queued", "running"]
    bad = st.get_run("bad")
    assert bad["status"] == "failed" and bad["error"] == "RuntimeError: boom"
    assert bad["clean_acc"] == 70.0  # the summary is kept for inspection, but the run is not `done`


def test_fresh_start_clears_resume_keeps(store_url):
    st = open_store(store_url)
    c = cfg("r")
    st.start_run(c, None)
    st.record_epoch("r", 1, {"train_loss": 1.0})
    first_start = st.get_run("r")["started_at"]
    st.start_run(c, None, resumed=True)
    row = st.get_run("r")
    assert len(row["epoch_metrics"]) == 1 and row["started_at"] == first_start
    st.finish_run("r", SUMMARY)
    st.record_evaluation("r", claim("pgd", 100, 70.0, 40.0))
    st.start_run(c, None)  # a fresh start of a done run: old results go
    row = st.get_run("r")
    assert row["status"] == "running" and row["epoch_metrics"] == [] and row["evaluations"] == []
    assert row["clean_acc"] is None and row["train_flops"] is None


def test_name_collision_and_live_duplicate(store_url):
    st = open_store(store_url)
    st.start_run(cfg("x"), None)
    with pytest.raises(UserError, match="different config"):
        st.start_run(cfg("x", attack_steps=5), None)
    # The same run started by another live process (pid 1 exists) is refused.
    with st.engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.name == "x").values(pid=1, process_start=None))
    with pytest.raises(UserError, match="already running"):
        st.start_run(cfg("x"), None)


def test_stale_detection(store_url):
    st = open_store(store_url)
    st.start_run(cfg("dead"), None)
    st.start_run(cfg("remote-old", seed=1), None)
    st.start_run(cfg("remote-fresh", seed=2), None)
    gone = subprocess.Popen(["true"])
    gone.wait()
    old = utcnow() - dt.timedelta(hours=1)
    with st.engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.name == "dead").values(pid=gone.pid, process_start=None))
        conn.execute(update(runs).where(runs.c.name == "remote-old").values(host="elsewhere", heartbeat_at=old))
        conn.execute(update(runs).where(runs.c.name == "remote-fresh").values(host="elsewhere"))
    status = {r["name"]: r["effective_status"] for r in st.list_runs()}
    assert status == {"dead": "stale", "remote-old": "stale", "remote-fresh": "running"}
    assert [r["name"] for r in st.list_runs(["status=stale"])] == ["dead", "remote-old"]
    # A stale run can be restarted (its process is gone).
    st.start_run(cfg("dead"), None, resumed=True)
    assert st.get_run("dead")["effective_status"] == "running"


def test_where_filters(store_url):
    st = open_store(store_url)
    specs = [("p1", dict(method="pgd", attack_steps=1, epochs=10)), ("p5", dict(method="pgd", attack_steps=5, epochs=100)),
             ("t5", dict(method="trades", attack_steps=5, epochs=200, model="wide_resnet16_2"))]
    for name, kw in specs:
        st.start_run(cfg(name, **kw), None)
        st.finish_run(name, SUMMARY)
    names = lambda *w: [r["name"] for r in st.list_runs(list(w))]  # noqa: E731
    assert names("method=pgd") == ["p1", "p5"]
    assert names("at=trades") == ["t5"]  # paper alias
    assert names("epochs>=100") == ["p5", "t5"]
    assert names("epochs<100", "method=pgd") == ["p1"]
    assert names("attack_steps!=1") == ["p5", "t5"]
    assert names("model=wide_resnet16_2,wide_resnet28_10") == ["t5"]
    assert names("name~5") == ["p5", "t5"]
    assert names("lr_base=0.1") == ["p1", "p5", "t5"]  # any TrainConfig key, from the stored config
    assert names("eps=0.1", "status=done") == ["p1", "p5", "t5"]
    with pytest.raises(UserError, match="unknown filter key 'flavour'"):
        st.list_runs(["flavour=x"])
    with pytest.raises(UserError, match="needs a number"):
        st.list_runs(["epochs>many"])


def test_import_is_idempotent(store_url):
    import pandas as pd

    st = open_store(store_url)
    frame = pd.DataFrame({"model": ["wrn_a", "wrn_a", "wrn_b"], "at": ["pgd", "trades", "pgd"], "at_steps": [1, 1, 2],
                          "epochs": [110, 110, 400], "synthetic_data": [False, True, False],
                          "eval_acc": [80.0, 81.0, 82.0], "aa_robust_acc": [45.0, 5.0, 50.0],
                          "train_flops": [1e17, 2e17, 3e17], "train_loss": [0.5, 0.6, 0.7]})
    assert st.import_frame(frame, "paper") == {"inserted": 3, "updated": 0, "unchanged": 0}
    assert st.import_frame(frame, "paper") == {"inserted": 0, "updated": 0, "unchanged": 3}
    out = st.runs_frame().set_index("name")
    assert list(out.index) == ["paper-wrn_a-pgd-k1-e110-nogen", "paper-wrn_a-trades-k1-e110-gen",
                               "paper-wrn_b-pgd-k2-e400-nogen"]
    assert list(out["method"]) == ["pgd", "trades", "pgd"] and list(out["clean_acc"]) == [80.0, 81.0, 82.0]
    assert list(out["collapsed"]) == [False, True, False] and set(out["source"]) == {"paper"}
    assert st.get_run("paper-wrn_b-pgd-k2-e400-nogen")["extra"] == {"train_loss": 0.7}
    frame.loc[0, "eval_acc"] = 90.0
    assert st.import_frame(frame, "paper") == {"inserted": 0, "updated": 1, "unchanged": 2}
    with pytest.raises(UserError, match="from source 'paper'"):
        st.import_frame(frame.assign(name=list(out.index)), "other")
    assert len(st.runs_frame()) == 3  # nothing half-imported
    with pytest.raises(UserError, match="imported run"):
        st.start_run(cfg("paper-wrn_a-pgd-k1-e110-nogen"), None)


def _writer(url: str, worker: int, n_runs: int, barrier) -> None:
    st = open_store(url)  # several processes open (and create) the store at once
    barrier.wait()
    for i in range(n_runs):
        name = f"w{worker}-r{i}"
        c = cfg(name, seed=worker * 1000 + i)
        st.start_run(c, None)
        for e in (1, 2, 3):
            st.record_epoch(name, e, {"train_loss": 1.0 / e})
        st.finish_run(name, {**SUMMARY, "wall_seconds": float(worker * 100 + i)})
        st.record_evaluation(name, claim("pgd", 10, 50.0, 25.0))


@pytest.mark.parametrize("workers,n_runs", [(4, 12)])
def test_concurrent_writers_lose_nothing(store_url, workers, n_runs):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_writer, args=(store_url, w, n_runs, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * workers
    st = open_store(store_url)
    frame = st.runs_frame()
    assert len(frame) == workers * n_runs
    assert sorted(frame["wall_seconds"]) == sorted(float(w * 100 + i) for w in range(workers) for i in range(n_runs))
    rows = st.list_runs()
    assert all(r["epochs_done"] == 3 for r in rows)
    details = [st.get_run(r["name"]) for r in rows]
    assert sum(len(d["epoch_metrics"]) for d in details) == workers * n_runs * 3
    assert sum(len(d["evaluations"]) for d in details) == workers * n_runs


def test_schema_version_guard(store_url):
    st = open_store(store_url)
    with st.engine.begin() as conn:
        conn.execute(update(meta).values(value=str(SCHEMA_VERSION + 1)))
    st.close()
    with pytest.raises(UserError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        open_store(store_url)


def test_unreachable_and_bad_urls(tmp_path):
    with pytest.raises(UserError, match="cannot reach store postgresql"):
        open_store("postgresql://nobody:secret@127.0.0.1:1/none")
    try:
        open_store("postgresql://nobody:secret@127.0.0.1:1/none")
    except UserError as exc:
        assert "secret" not in str(exc) and "\n" not in str(exc)
    with pytest.raises(UserError, match="unsupported store URL scheme 'mysql'"):
        open_store("mysql://x@y/z")
    with pytest.raises(UserError, match="no results store at"):
        open_store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_read_only_open_creates_nothing(store_url):
    from sqlalchemy import create_engine, inspect

    from robustscale.store import StoreNotFound
    from robustscale.store.location import normalize_url

    with pytest.raises(StoreNotFound, match="no results store at"):
        open_store(store_url, create=False)
    if store_url.startswith("sqlite"):
        assert not Path(store_url.partition(":///")[2]).exists()
    else:
        engine = create_engine(normalize_url(store_url))
        assert inspect(engine).get_table_names() == []
        engine.dispose()
    open_store(store_url)  # a writer creates it
    assert open_store(store_url, create=False).schema_version == SCHEMA_VERSION


def test_metrics_rows_one_reader_for_the_store_and_resume(tmp_path):
    """store.folder.metrics_rows: a last line cut mid-write is an unfinished epoch (left out); any other line
    that is not a JSON object, or a file that is not UTF-8, is one UserError naming the file (and the line)."""
    path = tmp_path / "metrics.jsonl"
    assert metrics_rows(path) == []
    path.write_text('{"epoch": 1, "clean_acc": 50.0}\n\n{"epoch": 2, "clean_acc": 60.0}\n{"epoch": 3, "cle')
    assert [row["epoch"] for _, row in metrics_rows(path)] == [1, 2]
    assert metrics_rows(path)[0][0] == '{"epoch": 1, "clean_acc": 50.0}'
    path.write_text('{"epoch": 1}\n[1, 2]\n{"epoch": 2}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl line 2 is not a JSON object"):
        metrics_rows(path)
    path.write_bytes(b'{"epoch": 1, "name": "\xff"}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        metrics_rows(path)
