"""Schema 3: the test images behind each headline accuracy (runs.clean_acc_n_examples, pgd_robust_acc_n_examples
beside aa_n_examples) and APGD-CE's headline with its count, filled from the evaluations, backfilled by the migration of a schema-2 store, and read by
``fit`` so that its lack-of-fit check knows each point's binomial noise."""
from __future__ import annotations

import sqlite3

import numpy as np
from sqlalchemy import inspect, update

from robustscale.config import TrainConfig
from robustscale.scaling import fit_law
from robustscale.scaling.identified import LACK_OF_FIT, identify, lack_of_fit
from robustscale.store import open_store
from robustscale.store.tables import SCHEMA_VERSION, meta


def _cfg(name: str, seed: int = 0) -> TrainConfig:
    return TrainConfig(name=name, model="wide_resnet16_1", dataset="fashion_mnist", method="pgd", attack_steps=2,
                       epochs=3, eps=0.1, seed=seed, output_dir="unused")


def _claim(attack: str, n: int, clean: float, robust: float) -> dict:
    return {"attack": attack, "eps": 0.1, "norm": "linf", "n_examples": n, "clean_acc": clean, "robust_acc": robust,
            "complete": True}


def _schema_2_store(path, tmp_path) -> None:
    st = open_store(path)
    st.start_run(_cfg("old"), tmp_path / "old")
    st.finish_run("old", {"status": "completed", "train_flops": 3.0e12})
    st.record_evaluation("old", _claim("pgd", 1000, 70.0, 40.0))
    st.record_evaluation("old", _claim("apgd-ce", 500, 70.5, 39.0))
    with st.engine.begin() as conn:
        for col in ("clean_acc_n_examples", "pgd_robust_acc_n_examples", "apgd_ce_robust_acc",
                    "apgd_ce_robust_acc_n_examples"):
            conn.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {col}")
        conn.exec_driver_sql("DROP TABLE leases")
        conn.execute(update(meta).values(value="2"))
    st.close()


def test_an_older_store_reads_read_only_through_a_migrated_copy_and_stays_as_it_was(tmp_path, cli):
    path = tmp_path / "runs.db"
    _schema_2_store(path, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    st = open_store(path, readonly=True)
    assert st.schema_version == SCHEMA_VERSION
    rec = st.runs_frame().set_index("name").loc["old"]
    assert (rec["apgd_ce_robust_acc"], rec["apgd_ce_robust_acc_n_examples"]) == (39.0, 500)
    st.close()
    code, out, err = cli("runs", "list", "--store", path)
    assert code == 0, err
    assert "old" in out and "39" in out, out
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # nothing written
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as conn:
        assert conn.execute("SELECT value FROM robustscale_meta").fetchone() == ("2",)


def test_schema_2_store_is_migrated_and_backfilled(tmp_path):
    path = tmp_path / "runs.db"
    st = open_store(path)
    st.start_run(_cfg("old"), tmp_path / "old")
    st.finish_run("old", {"status": "completed", "train_flops": 3.0e12})
    st.record_evaluation("old", _claim("pgd", 1000, 70.0, 40.0))
    st.record_evaluation("old", _claim("aa-standard", 200, 71.0, 38.0))
    st.record_evaluation("old", _claim("apgd-ce", 500, 70.5, 39.0))
    with st.engine.begin() as conn:  # make it a schema-2 store, as robustscale 0.2 wrote it
        for col in ("clean_acc_n_examples", "pgd_robust_acc_n_examples", "apgd_ce_robust_acc",
                    "apgd_ce_robust_acc_n_examples"):
            conn.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {col}")
        conn.execute(update(meta).values(value="2"))
    st.close()

    st = open_store(path)
    assert st.schema_version == SCHEMA_VERSION >= 3
    assert {"clean_acc_n_examples", "pgd_robust_acc_n_examples"} <= {
        c["name"] for c in inspect(st.engine).get_columns("runs")}
    rec = st.runs_frame().set_index("name").loc["old"]
    # Clean accuracy comes from the evaluation on the most images.
    assert (rec["pgd_robust_acc"], rec["pgd_robust_acc_n_examples"]) == (40.0, 1000)
    assert (rec["clean_acc"], rec["clean_acc_n_examples"]) == (70.0, 1000)
    assert (rec["aa_robust_acc"], rec["aa_n_examples"]) == (38.0, 200)
    assert (rec["apgd_ce_robust_acc"], rec["apgd_ce_robust_acc_n_examples"]) == (39.0, 500)


def test_fit_from_a_store_knows_each_points_test_images(tmp_path):
    """A power law through runs that bend (error-power data): the fit from the store knows n, so it is rejected."""
    st = open_store(tmp_path / "runs.db")
    flops = np.logspace(12, 14, 6)
    robust = 100 - 60 * (flops / 1e12) ** -0.3  # 40 % ... 75 %: a power law in accuracy cannot follow this
    for i, (x, y) in enumerate(zip(flops, robust)):
        name = f"r{i}"
        st.start_run(_cfg(name, seed=i), tmp_path / name)
        st.finish_run(name, {"status": "completed", "train_flops": float(x)})
        st.record_evaluation(name, _claim("aa-standard", 1000, 80.0, round(float(y), 1)))
        st.record_evaluation(name, _claim("apgd-ce", 1000, 80.0, round(float(y), 1)))
    frame = st.runs_frame()
    assert frame["aa_n_examples"].tolist() == [1000] * 6
    # APGD-CE (what a study fits) has its headline too, with its count.
    apgd = fit_law(frame, law="power", y="apgd_ce_robust_acc", bootstrap=50, seed=0, n_jobs=1)
    assert list(apgd.n_examples) == [1000] * 6 and identify(apgd).status == LACK_OF_FIT
    fit = fit_law(frame, law="power", bootstrap=50, seed=0, n_jobs=1)
    assert fit.n_examples is not None and list(fit.n_examples) == [1000] * 6
    assert identify(fit).status == LACK_OF_FIT
    # The law the runs were drawn from is not rejected: its residuals are the 0.05-point rounding only (noise-free
    # points leave its bootstrap degenerate, so only the lack-of-fit rule is asked).
    assert lack_of_fit(fit_law(frame, law="error-power", bootstrap=50, seed=0, n_jobs=1)) is None
