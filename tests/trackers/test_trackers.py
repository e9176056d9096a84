"""The three trackers, offline and for real: W&B in offline mode (its transaction log read back with W&B's own
`wandb leet inspect`), MLflow on a SQLite store (read back with `mlflow.search_runs`), TensorBoard event files (read
back with TensorBoard's EventAccumulator); resume, failures, rank 0 only, and bad names."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from robustscale.config import TrainConfig
from robustscale.errors import UserError
from robustscale.trackers import TrackerWarning, open_trackers

EPOCHS = [{"epoch": 1, "train_loss": 2.25, "clean_acc": 31.25, "pgd_robust_acc": 12.5, "lr": 0.05, "best": True,
           "eval_attack": "pgd2-linf", "eval_split": "val", "energy_kwh": None},
          {"epoch": 2, "train_loss": 1.5, "clean_acc": 43.75, "pgd_robust_acc": 18.75, "lr": 0.0, "best": True,
           "eval_attack": "pgd2-linf", "eval_split": "val", "energy_kwh": None}]
SUMMARY = {"name": "t", "status": "completed", "epochs_done": 2, "train_flops": 1.29e10, "device_hours": 2e-4,
           "device_name": "AMD EPYC", "energy_kwh": None, "cloud_usd_low": 1e-5, "step_flops": {"forward_flops": 2.2e7},
           "pgd_robust_acc": 15.0, "val_pgd_robust_acc": 18.75, "eps": 8 / 255, "epochs": 2}
CLAIMS = [{"file_stem": "aa-standard-8_255", "attack": "aa-standard", "clean_acc": 43.75, "robust_acc": 15.625,
           "n_examples": 32, "eps": 8 / 255, "stage_acc": {"apgd-ce": 18.75, "apgd-t": 15.625}}]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    pytest.importorskip("mlflow")
    # One SQLite store for the module: creating its tables (MLflow's migrations) takes seconds.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def offline(monkeypatch, tmp_path, mlflow_uri):
    monkeypatch.chdir(tmp_path)  # MLflow's artifact root defaults to ./mlruns
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"exp-{tmp_path.name}")
    return tmp_path


def _log_run(run_dir: Path, names=("wandb", "mlflow", "tensorboard"), epochs=EPOCHS, **kw):
    cfg = TrainConfig(name="t", log_to=list(names))
    trackers = open_trackers(cfg.log_to, cfg.to_dict(), "t", run_dir, **kw)
    for row in epochs:
        trackers.log_epoch(row, step=row["epoch"])
    trackers.log_summary(SUMMARY, CLAIMS)
    trackers.finish("completed")
    return cfg, trackers


def wandb_records(run_dir: Path) -> tuple[list[dict], dict]:
    """(history rows, {"run_id", "config", "summary", "exit_code"}) of the offline runs under run_dir/wandb, from
    their transaction logs as W&B's own reader prints them (`wandb leet inspect --json`)."""
    history, run = [], {"config": {}, "summary": {}}
    for log in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        out = subprocess.run([sys.executable, "-c", "import sys; from wandb.cli.cli import cli; sys.exit(cli())",
                              "leet", "inspect", "--json", str(log)], capture_output=True, text=True, check=True,
                             timeout=120).stdout
        for record in (json.loads(line) for line in out.splitlines() if line.strip()):
            kind = record["type"]
            if kind == "history":
                history.append(record["history"]["item"])
            elif kind == "run":
                run.update(run_id=record["run"]["run_id"], name=record["run"].get("display_name"))
                run["config"].update(record["run"].get("config", {}).get("update", {}))
            elif kind == "summary":
                run["summary"].update(record["summary"].get("update", {}))
            elif kind == "exit":
                run["exit_code"] = record["exit"].get("exit_code", 0)
    return history, run


def mlflow_run(experiment: str):
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment])
    assert len(runs) == 1
    return runs.iloc[0]


def test_records_read_back(offline):
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = offline / "run"
    run_dir.mkdir()
    cfg, _ = _log_run(run_dir)
    ids = json.loads((run_dir / "trackers.json").read_text())
    assert set(ids) == {"wandb", "mlflow"}

    # W&B: config, one history row per epoch (numbers only), the summary's and the claims' numbers and texts
    history, summary = wandb_records(run_dir)
    assert [(h["epoch"], h["train_loss"], h["val/pgd_robust_acc"], h["best"]) for h in history] == \
        [(1, 2.25, 12.5, 1), (2, 1.5, 18.75, 1)]
    assert all("eval_attack" not in h and "energy_kwh" not in h and "pgd_robust_acc" not in h for h in history)
    assert summary["run_id"] == ids["wandb"] and summary["name"] == "t" and summary["exit_code"] == 0
    assert summary["config"]["log_to"] == ["wandb", "mlflow", "tensorboard"] and summary["config"]["eps"] == cfg.eps
    s = summary["summary"]
    assert s["summary/train_flops"] == 1.29e10 and s["summary/step_flops/forward_flops"] == 2.2e7
    assert s["summary/device_name"] == "AMD EPYC" and s["summary/status"] == "completed"
    assert s["test/aa-standard-8_255/robust_acc"] == 15.625 and s["test/aa-standard-8_255/stage_acc/apgd-t"] == 15.625
    assert s["test/pgd_robust_acc"] == 15.0 and s["val/selected/pgd_robust_acc"] == 18.75  # the headline: test images
    assert not any(k in s for k in ("summary/eps", "summary/epochs", "summary/pgd_robust_acc"))  # config: params

    # MLflow: params = the config, metric histories per epoch, summary and claim metrics, tags, artifacts, status
    row = mlflow_run(f"exp-{offline.name}")
    assert row["run_id"] == ids["mlflow"] and row["status"] == "FINISHED" and row["tags.mlflow.runName"] == "t"
    assert row["params.method"] == "pgd" and row["params.eps"] == str(cfg.eps)
    assert row["metrics.summary/train_flops"] == 1.29e10 and row["metrics.test/aa-standard-8_255/n_examples"] == 32
    assert "metrics.summary/eps" not in row.index and row["metrics.val/selected/pgd_robust_acc"] == 18.75
    assert row["tags.robustscale.device_name"] == "AMD EPYC"
    client = mlflow.MlflowClient()
    assert [(m.step, m.value) for m in client.get_metric_history(row["run_id"], "val/clean_acc")] == \
        [(1, 31.25), (2, 43.75)]
    summary_json = json.loads(Path(client.download_artifacts(row["run_id"], "summary.json", str(offline))).read_text())
    assert summary_json == SUMMARY

    # TensorBoard: scalars per epoch, summary/claims at the last epoch, config and summary as text
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train_loss")] == [(1, 2.25), (2, 1.5)]
    assert [(e.step, e.value) for e in acc.Scalars("summary/train_flops")] == [(2, pytest.approx(1.29e10))]
    assert [e.value for e in acc.Scalars("test/aa-standard-8_255/robust_acc")] == [15.625]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`\n"))["log_to"] == ["wandb", "mlflow", "tensorboard"]


def test_resume_continues_the_same_runs(offline):
    pytest.importorskip("wandb")
    run_dir = offline / "run"
    run_dir.mkdir()
    _log_run(run_dir, ("wandb", "mlflow"), epochs=EPOCHS[:1])
    ids = json.loads((run_dir / "trackers.json").read_text())
    _log_run(run_dir, ("wandb", "mlflow"), epochs=EPOCHS[1:])  # a resumed session: epoch 2 only
    assert json.loads((run_dir / "trackers.json").read_text()) == ids
    import mlflow

    row = mlflow_run(f"exp-{offline.name}")  # still one run
    assert row["run_id"] == ids["mlflow"]
    history = mlflow.MlflowClient().get_metric_history(ids["mlflow"], "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.25), (2, 1.5)]
    history, summary = wandb_records(run_dir)
    assert summary["run_id"] == ids["wandb"] and sorted(h["epoch"] for h in history) == [1, 2]


def test_missing_or_broken_tracker_warns_and_the_run_goes_on(offline, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    run_dir = offline / "run"
    run_dir.mkdir()
    with pytest.warns(TrackerWarning) as caught:
        _, trackers = _log_run(run_dir)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("log_to wandb: not started (ModuleNotFoundError: import of wandb halted")
               and m.endswith("pip install 'robustscale[wandb]'; the run goes on without it") for m in messages)
    assert any(m.startswith("log_to mlflow: not started") for m in messages)
    assert all(len(m.splitlines()) == 1 for m in messages)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))  # the one that started still logged
    with pytest.raises(UserError, match=r"log_to wandb: not started .*log_to_required is true"):
        open_trackers(["tensorboard", "wandb"], {}, "t", offline / "run2", required=True)
    assert not (offline / "run2").exists()  # TensorBoard had started: its folder and event file are gone


def test_a_tracker_failing_mid_run_is_dropped(offline, monkeypatch):
    pytest.importorskip("tensorboard")
    from robustscale.trackers import backends

    def disk_full(self, metrics, step):
        raise OSError("No space left on device")

    monkeypatch.setattr(backends.TensorBoardTracker, "log_epoch", disk_full)
    trackers = open_trackers(["tensorboard"], {}, "t", offline)
    with pytest.warns(TrackerWarning, match="log_to tensorboard: log_epoch failed .*No space left"):
        trackers.log_epoch(EPOCHS[0], step=1)
    assert trackers.names == []
    trackers.log_epoch(EPOCHS[1], step=2)  # nothing left to fail: no second warning
    trackers.finish()


def test_rank_nonzero_logs_nothing(offline):
    trackers = open_trackers(["tensorboard", "mlflow"], {}, "t", offline / "run", rank=1)
    assert trackers.names == [] and not (offline / "run").exists()


def test_unknown_tracker_name_is_refused(tmp_path, cli):
    with pytest.raises(UserError, match=r"unknown log_to tracker 'neptune'; valid: wandb, mlflow, tensorboard"):
        TrainConfig.from_dict({"log_to": ["wandb", "neptune"]})
    assert TrainConfig.from_dict({"log_to": "WandB, tensorboard,wandb"}).log_to == ["wandb", "tensorboard"]
    assert TrainConfig.from_dict({"log_to": None}).log_to == []
    assert TrainConfig().config_hash() == TrainConfig(log_to=["mlflow"], log_to_required=True).config_hash()
    code, _, err = cli("train", "--output-dir", tmp_path / "runs", "--log-to", "wandb,nope")
    assert code == 2 and err.strip() == "error: unknown log_to tracker 'nope'; valid: wandb, mlflow, tensorboard"
    assert not (tmp_path / "runs").exists()


def test_claims_made_later_reach_the_same_runs(offline):
    pytest.importorskip("tensorboard")
    import yaml

    from robustscale.trackers import log_run_records
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = offline / "run"
    run_dir.mkdir()
    cfg, _ = _log_run(run_dir, ("mlflow", "tensorboard"))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run_dir / "summary.json").write_text(json.dumps(SUMMARY))
    (run_dir / "eval").mkdir()
    later = {**CLAIMS[0], "robust_acc": 12.5}
    del later["file_stem"]  # as evaluate writes it: the stem is the file's name
    (run_dir / "eval" / "aa-standard-4_255.json").write_text(json.dumps(later))
    log_run_records(run_dir, TrainConfig.from_yaml(run_dir / "config.yaml"))
    row = mlflow_run(f"exp-{offline.name}")
    assert row["metrics.test/aa-standard-4_255/robust_acc"] == 12.5 and row["status"] == "FINISHED"
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("test/aa-standard-4_255/robust_acc")] == [12.5]


def test_a_tiny_train_run_logs_to_tensorboard_and_mlflow(offline, mnist_like_dir, cli):
    """`train --log-to tensorboard,mlflow`: per-epoch rows, the resolved config, the final summary with its compute
    fields; then `evaluate --run` adds its claim to the same MLflow run."""
    pytest.importorskip("tensorboard")
    import mlflow
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast and immune to a busy machine
    try:
        code, stdout, err = cli("train", "--dataset", "fashion_mnist", "--model", "wide_resnet16_1", "--data-dir",
                                mnist_like_dir, "--output-dir", offline / "runs", "--name", "tiny", "--train-subset",
                                "64", "--batch-size", "32", "--epochs", "2", "--eps", "0.1", "--attack-steps", "1",
                                "--eval-subset", "32", "--eval-attack-steps", "2", "--workers", "0", "--energy",
                                "false", "--progress", "false", "--log-to", "tensorboard,mlflow", "--json")
        assert code == 0, err
        run_dir = offline / "runs" / "tiny"
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((run_dir / "summary.json").read_text())
        code, _, err = cli("evaluate", "--run", run_dir, "--attack", "pgd", "--steps", "2", "--n-examples", "32",
                           "--no-energy", "--no-progress", "--json")
        assert code == 0, err
    finally:
        torch.set_num_threads(threads)

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("val/clean_acc")] == \
        [(r["epoch"], pytest.approx(r["clean_acc"])) for r in rows]
    assert all(r["eval_split"] == "val" for r in rows)
    for key in ("train_flops", "device_hours", "cloud_usd_low", "cloud_usd_high", "electricity_usd"):
        values = [e.value for e in acc.Scalars(f"summary/{key}")]  # train's, then evaluate's (same compute)
        assert len(values) == 2 and all(v == pytest.approx(summary[key]) for v in values)
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`\n")) == json.loads(json.dumps(TrainConfig.from_yaml(run_dir / "config.yaml")
                                                                  .to_dict()))

    row = mlflow_run(f"exp-{offline.name}")
    assert row["tags.mlflow.runName"] == "tiny" and row["status"] == "FINISHED"
    assert row["params.model"] == "wide_resnet16_1" and row["params.log_to"] == "['tensorboard', 'mlflow']"
    assert row["metrics.summary/train_flops"] == pytest.approx(summary["train_flops"])
    assert row["metrics.summary/step_flops/analytic_train_step_flops"] == \
        pytest.approx(summary["step_flops"]["analytic_train_step_flops"])
    assert row["tags.robustscale.status"] == "completed"
    history = mlflow.MlflowClient().get_metric_history(row["run_id"], "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"], pytest.approx(r["train_loss"])) for r in rows]
    claim = json.loads((run_dir / "eval" / "pgd2-0.1.json").read_text())
    assert row["metrics.test/pgd2-0.1/robust_acc"] == pytest.approx(claim["robust_acc"])
    assert row["metrics.test/pgd2-0.1/n_examples"] == 32


def test_mlflow_default_store_is_a_sqlite_file_beside_the_runs(offline, monkeypatch):
    """Without MLFLOW_TRACKING_URI, MLflow 3 refuses its old ./mlruns file store; ours is <output_dir>/mlflow.db.
    No third-party deprecation warning (SQLAlchemy's "noload is deprecated") reaches the user."""
    import warnings

    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    run_dir = offline / "runs" / "t"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _log_run(run_dir, ("mlflow",))
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]
    store = offline / "runs" / "mlflow.db"
    assert store.is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name(f"exp-{offline.name}").experiment_id])
    assert run.data.metrics["val/clean_acc"] == 43.75 and run.data.params["method"] == "pgd"


def test_required_tracker_that_cannot_start_leaves_nothing_behind(offline, mnist_like_dir, cli, monkeypatch):
    """`train --log-to tensorboard,mlflow --log-to-required` with an MLflow that cannot start: exit 2, one line, and
    no run folder, no event file, no store (the trackers start before the run writes anything)."""
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    out = offline / "runs"
    code, _, err = cli("train", "--dataset", "fashion_mnist", "--model", "wide_resnet16_1", "--data-dir", mnist_like_dir,
                       "--output-dir", out, "--name", "t", "--train-subset", "64", "--batch-size", "32", "--epochs",
                       "1", "--workers", "0", "--energy", "false", "--progress", "false",
                       "--log-to", "tensorboard,mlflow", "--log-to-required")
    assert code == 2 and err.strip().startswith("error: log_to mlflow: not started") and len(err.strip().splitlines()) == 1
    assert not (out / "t").exists() and not (out / "runs.db").exists()
