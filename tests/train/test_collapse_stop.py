"""Catastrophic-overfitting check in the training loop: FGSM next to PGD every epoch, the detector's line,
``on_collapse: stop`` ending training with its checkpoints, and the flag in summary.json and the store.

A tiny run does not collapse by itself; a ratio of 0.99 and a gap of 0.01 points make the check fire at the
first epoch whose PGD accuracy is below its FGSM accuracy (or below its best), as a real collapse would."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

import robustscale  # noqa: F401
from robustscale.config import TrainConfig
from robustscale.train.collapse import CollapseThresholds, detect_collapse, flagged_at
from robustscale.store import open_store
from robustscale.train import train

TINY = dict(dataset="fashion_mnist", model="wide_resnet16_1", train_subset=512, batch_size=32, epochs=3, eps=0.1,
            method="n_fgsm", eval_subset=64, eval_attack_steps=3, workers=0, energy=False, progress=False,
            deterministic=True, lr_base=0.1, warmup_epochs=0, collapse_ratio=0.99, collapse_gap=0.01,
            val_size=0, select_split="test")  # the whole 512-image split trains; the check runs on test images


def _run(tmp_path: Path, data_dir: Path, name: str, **kw) -> tuple[dict, Path]:
    cfg = TrainConfig.from_dict({**TINY, "data_dir": str(data_dir), "output_dir": str(tmp_path), "name": name, **kw})
    return train(cfg), tmp_path / name


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_on_collapse_stop_ends_training_and_keeps_its_checkpoint(tmp_path, mnist_like_dir, capsys):
    summary, run_dir = _run(tmp_path, mnist_like_dir, "stop", on_collapse="stop")
    rows = _rows(run_dir)
    # Every epoch reports FGSM next to PGD on the same images.
    assert all(0 <= r["fgsm_robust_acc"] <= r["clean_acc"] and r["eval_images"] == 64 for r in rows)
    expected = detect_collapse(rows, CollapseThresholds(0.99, 0.01))
    assert expected is not None, f"the check did not fire on {rows}"
    epoch = expected.epoch
    assert epoch < TINY["epochs"], "needs an epoch after the flagged one to show that training stopped"
    assert [r["epoch"] for r in rows] == list(range(1, epoch + 1))
    assert summary["status"] == "completed" and summary["epochs_done"] == epoch and summary["stopped_by_collapse"]
    assert summary["collapsed"] is True and summary["collapsed_epoch"] == epoch
    assert summary["collapse_reason"] == expected.reason
    assert summary["collapse_pgd_robust_acc"] == rows[-1]["pgd_robust_acc"]
    assert summary["collapse_fgsm_robust_acc"] == rows[-1]["fgsm_robust_acc"]
    assert (summary["collapse_ratio"], summary["collapse_gap"], summary["on_collapse"]) == (0.99, 0.01, "stop")
    assert summary["collapse_monitored"] is True
    assert json.loads((run_dir / "summary.json").read_text())["collapsed_epoch"] == epoch
    # The checkpoint of the flagged epoch is kept, loadable, and says which epoch it is.
    with safe_open(str(run_dir / "last.safetensors"), framework="pt") as fh:
        assert fh.metadata()["epoch"] == str(epoch)
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "state.pt").is_file()
    # One line on stderr with the epoch and both accuracies.
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "catastrophic overfitting" in ln]
    assert len(lines) == 1
    assert f"epoch {epoch}:" in lines[0] and f"PGD {rows[-1]['pgd_robust_acc']:.1f}%" in lines[0] \
        and f"FGSM {rows[-1]['fgsm_robust_acc']:.1f}%" in lines[0] and "stopping" in lines[0]
    # The store has the flag and both per-epoch accuracies.
    row = open_store(tmp_path / "runs.db", create=False).get_run("stop")
    assert row["collapsed_epoch"] == epoch and row["collapsed"] is True and row["status"] == "done"
    assert [e["fgsm_robust_acc"] for e in row["epoch_metrics"]] == [r["fgsm_robust_acc"] for r in rows]
    # Resuming a stopped run trains nothing more.
    again = train(None, resume=run_dir)
    assert again["epochs_done"] == epoch and len(_rows(run_dir)) == epoch


def test_on_collapse_warn_flags_and_goes_on(tmp_path, mnist_like_dir, capsys):
    summary, run_dir = _run(tmp_path, mnist_like_dir, "warn", epochs=2)
    rows = _rows(run_dir)
    expected = detect_collapse(rows, CollapseThresholds(0.99, 0.01))
    assert summary["epochs_done"] == 2 and not summary["stopped_by_collapse"] and summary["on_collapse"] == "warn"
    assert summary["collapsed_epoch"] == (expected.epoch if expected else None)
    # The verdict on the reported checkpoint: the same rules at the selected epoch, from metrics.jsonl.
    at = flagged_at(rows, summary["selected_epoch"], CollapseThresholds(0.99, 0.01)) if expected else False
    assert summary["collapse_at_selected"] is at and (summary["collapsed"] is True) == at
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "catastrophic overfitting" in ln]
    assert len(lines) == (1 if expected else 0)
    if expected:
        assert "training goes on" in lines[0]


def test_default_thresholds_leave_a_healthy_run_alone(tmp_path, mnist_like_dir):
    summary, run_dir = _run(tmp_path, mnist_like_dir, "healthy", epochs=1, train_subset=128, method="pgd",
                            attack_steps=1,
                            collapse_ratio=0.5, collapse_gap=10)
    assert summary["collapsed_epoch"] is None and summary["collapsed"] is None and summary["collapse_gap"] == 10
    assert summary["collapse_at_selected"] is False
    assert _rows(run_dir)[0]["fgsm_robust_acc"] is not None


@pytest.mark.parametrize("args,needle", [
    (("--on-collapse", "panic"), "unknown on_collapse 'panic'; valid: warn, stop"),
    (("--collapse-gap", "-5"), "invalid collapse_gap -5.0"),
    (("--method", "grad_align", "--grad-align-lambda", "0"), "invalid grad_align_lambda 0.0"),
])
def test_bad_collapse_options_are_one_line_exit_2(tmp_path, mnist_like_dir, cli, args, needle):
    code, out, err = cli("train", "--dataset", "fashion_mnist", "--data-dir", mnist_like_dir, "--output-dir",
                         tmp_path / "runs", *args)
    assert code == 2 and err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
