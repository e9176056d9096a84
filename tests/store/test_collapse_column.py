"""Schema 2: runs.collapsed_epoch and epochs.fgsm_robust_acc, added to a schema-1 store by its migration; a run
the per-epoch check flagged stays ``collapsed`` whatever AutoAttack later reads."""
from __future__ import annotations

from sqlalchemy import inspect, update

from robustscale.config import TrainConfig
from robustscale.store import open_store
from robustscale.store.tables import SCHEMA_VERSION, meta

SUMMARY = {"status": "completed", "train_flops": 3.0e12, "clean_acc": 70.0, "pgd_robust_acc": 40.0}


def _cfg(name: str) -> TrainConfig:
    return TrainConfig(name=name, model="wide_resnet16_1", dataset="fashion_mnist", method="n_fgsm", epochs=3,
                       eps=0.1, output_dir="unused")


def _aa(robust: float) -> dict:
    return {"attack": "aa-standard", "eps": 0.1, "norm": "linf", "n_examples": 100, "clean_acc": 70.0,
            "robust_acc": robust, "complete": True}


def test_schema_1_store_is_migrated_and_keeps_its_runs(tmp_path):
    path = tmp_path / "runs.db"
    st = open_store(path)
    st.start_run(_cfg("old"), tmp_path / "old")
    st.record_epoch("old", 1, {"epoch": 1, "pgd_robust_acc": 40.0})
    st.finish_run("old", SUMMARY)
    with st.engine.begin() as conn:  # make it a schema-1 store, as robustscale 0.1 wrote it
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN collapsed_epoch")
        conn.exec_driver_sql("ALTER TABLE epochs DROP COLUMN fgsm_robust_acc")
        for col in ("clean_acc_n_examples", "pgd_robust_acc_n_examples", "apgd_ce_robust_acc",
                    "apgd_ce_robust_acc_n_examples"):  # schema 3's
            conn.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {col}")
        conn.execute(update(meta).values(value="1"))
    st.close()

    st = open_store(path)
    assert st.schema_version == SCHEMA_VERSION >= 3
    columns = {t: {c["name"] for c in inspect(st.engine).get_columns(t)} for t in ("runs", "epochs")}
    assert "collapsed_epoch" in columns["runs"] and "fgsm_robust_acc" in columns["epochs"]
    old = st.get_run("old")
    assert old["status"] == "done" and old["pgd_robust_acc"] == 40.0 and old["collapsed_epoch"] is None
    assert old["epoch_metrics"][0]["pgd_robust_acc"] == 40.0


def test_flagged_run_stays_collapsed_after_autoattack(tmp_path):
    st = open_store(tmp_path / "runs.db")
    # the reported checkpoint flagged (True), recovered after the flag (False), a record from before the field
    for name, flagged, at_selected in (("flagged", 2, True), ("healthy", None, False), ("recovered", 2, False),
                                       ("old-record", 2, None)):
        st.start_run(_cfg(name), tmp_path / name)
        st.record_epoch(name, 1, {"epoch": 1, "pgd_robust_acc": 40.0, "fgsm_robust_acc": 45.0})
        extra = {} if at_selected is None else {"collapse_at_selected": at_selected}
        st.finish_run(name, {**SUMMARY, "collapsed": True if at_selected else None, "collapsed_epoch": flagged,
                             **extra})
        st.record_evaluation(name, _aa(35.0))  # AutoAttack well above the 10% rule
    flagged, healthy = st.get_run("flagged"), st.get_run("healthy")
    assert flagged["collapsed_epoch"] == 2 and flagged["collapsed"] is True
    assert healthy["collapsed_epoch"] is None and healthy["collapsed"] is False
    recovered, old = st.get_run("recovered"), st.get_run("old-record")
    assert recovered["collapsed_epoch"] == 2 and recovered["collapsed"] is False  # the flag is kept, not the verdict
    assert old["collapsed"] is True  # without the field, any flag counts
    assert flagged["epoch_metrics"][0]["fgsm_robust_acc"] == 45.0
    frame = st.runs_frame().set_index("name")
    assert frame.loc["flagged", "collapsed_epoch"] == 2 and bool(frame.loc["flagged", "collapsed"])
