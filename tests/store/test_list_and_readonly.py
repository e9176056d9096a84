"""`runs list` shows every headline with its n; `runs show` lists each evaluation once; reading commands
leave nothing beside the store (no -wal / -shm files)."""
from __future__ import annotations

import json

from robustscale.config import TrainConfig
from robustscale.store import open_store


def _store(tmp_path):
    db = tmp_path / "runs.db"
    st = open_store(db)
    cfg = TrainConfig(name="pgd", output_dir=str(tmp_path), model="wide_resnet16_1", dataset="fashion_mnist",
                      eps=0.1, attack_steps=2, epochs=1)
    st.start_run(cfg, tmp_path / "pgd")
    st.finish_run("pgd", {"status": "completed", "clean_acc": 80.0, "clean_acc_n_examples": 100,
                          "pgd_robust_acc": None, "eval_flops": 1e9})
    for n, robust in ((50, 40.0), (1000, 42.5)):  # the same claim file evaluated twice: the second replaces it
        st.record_evaluation("pgd", {"attack": "apgd-ce", "eps": 0.1, "n_examples": n, "clean_acc": 81.0,
                                     "robust_acc": robust, "eval_flops": 2e9, "claim_path": "eval/apgd-ce-0.1.json"})
    st.record_evaluation("pgd", {"attack": "clean", "eps": 0.0, "n_examples": 2000, "clean_acc": 79.05,
                                 "eval_flops": 1e9, "claim_path": "eval/clean.json"})
    st.record_evaluation("pgd", {"attack": "aa-standard", "eps": 0.1, "n_examples": 50, "clean_acc": 82.0,
                                 "robust_acc": 38.0, "eval_flops": 5e9, "claim_path": "eval/aa-standard-0.1.json"})
    st.close()
    return db


def test_list_shows_each_headline_with_its_n_and_show_each_evaluation_once(cli, tmp_path):
    db = _store(tmp_path)
    code, out, err = cli("runs", "list", "--store", db)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert "APGD-CE % (n)" in header
    # clean from the 2,000-image clean evaluation (eps 0 holds at every eps), APGD-CE from its latest claim
    assert "79.0 (2,000)" in row and "42.5 (1,000)" in row and "38.0 (50)" in row
    code, out, _ = cli("runs", "show", "pgd", "--store", db, "--json")
    evals = json.loads(out)["evaluations"]
    assert sorted(e["attack"] for e in evals) == ["aa-standard", "apgd-ce", "clean"]
    rec = json.loads(out)
    assert rec["eval_flops"] == 1e9 + 2e9 + 1e9 + 5e9  # training's checks plus each claim file once


def test_reading_commands_create_no_files_beside_the_store(cli, tmp_path):
    db = _store(tmp_path)
    (tmp_path / "x").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (("runs", "list"), ("runs", "show", "pgd"), ("runs", "export", "-o", tmp_path / "x" / "runs.csv")):
        code, _, err = cli(*args, "--store", db)
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "runs.db-wal").exists() and not (tmp_path / "runs.db-shm").exists()


def test_a_reader_beside_a_live_writer_sees_its_commits(tmp_path):
    db = _store(tmp_path)
    writer = open_store(db)
    writer.record_evaluation("pgd", {"attack": "pgd", "eps": 0.1, "n_examples": 10, "robust_acc": 50.0,
                                     "claim_path": "eval/pgd10-0.1.json"})  # still in the writer's WAL
    reader = open_store(db, readonly=True)
    assert reader.get_run("pgd")["pgd_robust_acc"] == 50.0
    writer.close()
    reader.close()


def test_a_clean_evaluation_is_found_at_the_runs_eps(tmp_path):
    """A sweep asks for its evaluation at the run's eps; a clean one is stored at eps 0 and must count
    (else every rerun of the sweep evaluated its finished runs again)."""
    st = open_store(_store(tmp_path), readonly=True)
    assert st.evaluation_exists("pgd", "clean", 0.1, 2000) and st.evaluation_exists("pgd", "clean", 0.1, None)
    assert not st.evaluation_exists("pgd", "clean", 0.1, 1000)
    assert st.evaluation_exists("pgd", "apgd-ce", 0.1, 1000) and not st.evaluation_exists("pgd", "apgd-ce", 0.2, 1000)


def test_a_run_with_a_relative_output_dir_is_recorded_beside_its_folder(tmp_path, monkeypatch):
    """Evaluated from another directory, a run whose config says `output_dir: runs` is recorded in the store
    beside its folder, not in a new `runs/runs.db` under the current directory."""
    import yaml

    from robustscale.store import record_evaluation

    run = tmp_path / "start" / "runs" / "r"
    run.mkdir(parents=True)
    cfg = TrainConfig(name="r", output_dir="runs", model="wide_resnet16_1", dataset="fashion_mnist", eps=0.1)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run / "summary.json").write_text(json.dumps({"status": "completed", "train_flops": 1e12}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    record_evaluation(run, {"attack": "clean", "eps": 0.0, "n_examples": 10, "clean_acc": 50.0,
                            "claim_path": str(run / "eval" / "clean.json")})
    assert not (elsewhere / "runs").exists()
    assert open_store(run.parent / "runs.db", readonly=True).get_run("r")["clean_acc"] == 50.0
