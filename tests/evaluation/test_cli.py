"""`robustscale evaluate` end to end on Fashion-MNIST-format files: claims next to the checkpoint,
a training run's summary.json and the results store, resuming with --max-batches, and bad input."""
from __future__ import annotations

import json

import pytest
import torch

from robustscale.config import TrainConfig

NAME = "wide_resnet16_1"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A timm-style checkpoint of an untrained WRN-16-1 (1 channel, 10 classes)."""
    from robustscale.data import dataset_normalization
    from robustscale.models import create_model

    torch.manual_seed(0)
    model = create_model(NAME, num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist"))
    path = tmp_path_factory.mktemp("ckpt") / "model.pth.tar"
    torch.save({"state_dict": model.model.state_dict(), "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_like_dir):
    """A real (tiny, one-epoch) training run made by robustscale.train."""
    from robustscale.train import train

    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig.from_dict(dict(
        dataset="fashion_mnist", model=NAME, train_subset=64, batch_size=32, epochs=1, eps=0.1, attack_steps=1,
        eval_subset=16, eval_attack_steps=1, workers=0, energy=False, progress=False, data_dir=str(mnist_like_dir),
        output_dir=str(out), name="tiny"))
    train(cfg)
    return out / "tiny"


def test_checkpoint_pgd_claim(cli, checkpoint, mnist_like_dir):
    code, out, err = cli("evaluate", "--model", NAME, "--checkpoint", checkpoint, "--dataset", "fashion_mnist",
                         "--data-dir", mnist_like_dir, "--attack", "pgd", "--steps", "3", "--n-examples", "24",
                         "--batch-size", "16", "--json")
    assert code == 0, err
    claim = json.loads(out)
    path = checkpoint.parent / "eval" / "pgd3-8_255.json"
    assert claim["claim_path"] == str(path) and path.is_file()
    on_disk = json.loads(path.read_text())
    for key in ("model_name", "dataset", "threat_model", "eps", "clean_acc", "robust_acc", "n_examples", "attack",
                "attack_version", "eval_flops", "wall_seconds", "energy_kwh", "checkpoint_sha256"):
        assert on_disk[key] == claim[key], key
    assert (claim["model_name"], claim["dataset"], claim["threat_model"], claim["n_examples"]) == \
        (NAME, "fashion_mnist", "Linf", 24)
    assert claim["eps"] == pytest.approx(8 / 255) and claim["eps_text"] == "8/255"
    assert claim["energy_kwh"] is not None and claim["energy_kwh"] >= 0  # measured by codecarbon
    assert claim["eval_flops"] > 0 and claim["forward_images"] >= 24

    # Same numbers as the library on the same first 24 test images.
    from robustscale.data import load_eval_tensors
    from robustscale.evaluation import evaluate, load_model

    model, _ = load_model(checkpoint, NAME, "fashion_mnist")
    x, y = load_eval_tensors("fashion_mnist", 24, mnist_like_dir)
    direct = evaluate(model, x, y, "pgd", steps=3, batch_size=16, flops=False)
    assert (direct["clean_acc"], direct["robust_acc"]) == (claim["clean_acc"], claim["robust_acc"])

    code, out, err = cli("evaluate", "--checkpoint", checkpoint, "--model", NAME, "--dataset", "fashion_mnist",
                         "--data-dir", mnist_like_dir, "--attack", "clean", "--n-examples", "24", "--no-energy")
    assert code == 0, err
    assert f"{claim['clean_acc']:.2f}" in out and "accuracy (%)" in out and "eval FLOPs" in out


def test_run_evaluation_updates_summary_and_store(cli, run_dir, mnist_like_dir, monkeypatch):
    monkeypatch.delenv("ROBUSTSCALE_STORE", raising=False)
    base = ("evaluate", "--run", run_dir, "--n-examples", "16", "--batch-size", "16", "--no-progress", "--json")
    code, out, err = cli(*base)  # pgd-10 at the run's eps (0.1)
    assert code == 0, err
    pgd = json.loads(out)
    assert pgd["eps"] == pytest.approx(0.1) and pgd["attack_label"] == "pgd10" and pgd["run_name"] == "tiny"
    assert (run_dir / "eval" / "pgd10-0.1.json").is_file()
    # eps 0.5 fools this barely trained net during APGD-CE, which keeps AutoAttack cheap here.
    code, out, err = cli(*base, "--attack", "aa-standard", "--eps", "0.5")
    assert code == 0, err
    aa = json.loads(out)
    assert aa["autoattack_acc"] == aa["robust_acc"] <= aa["stage_acc"]["apgd-ce"] <= aa["clean_acc"]
    assert list(aa["stage_acc"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa["attack_version"].startswith("pyautoattack 0.2.0")

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["pgd_robust_acc"] == pgd["robust_acc"]
    # AutoAttack at eps 0.5 is not the run's (0.1): kept with the evaluations, not a headline (schema.headline,
    # the store's rule too)
    assert (summary["aa_robust_acc"], summary["aa_n_examples"]) == (None, None)
    assert summary["evaluations"]["aa-standard-0.5"]["robust_acc"] == aa["robust_acc"]
    assert set(summary["evaluations"]) == {"pgd10-0.1", "aa-standard-0.5"}
    assert summary["eval_flops"] == pytest.approx(summary["train_eval_flops"] + pgd["eval_flops"] + aa["eval_flops"])
    assert summary["name"] == "tiny" and summary["train_flops"] > 0  # training's record is kept

    from robustscale.store import open_store

    store = open_store(run_dir.parent / "runs.db", create=False)
    rows = store.evaluations_of(["tiny"])["tiny"]
    assert {(r["attack"], round(r["eps"], 4)) for r in rows} >= {("pgd", 0.1), ("aa-standard", 0.5)}


def test_max_batches_then_resume(cli, checkpoint, mnist_like_dir, tmp_path):
    args = ("evaluate", "--checkpoint", checkpoint, "--model", NAME, "--dataset", "fashion_mnist", "--data-dir",
            mnist_like_dir, "--attack", "pgd", "--steps", "2", "--n-examples", "32", "--batch-size", "8",
            "--output-dir", tmp_path, "--no-energy", "--no-progress")
    code, out, err = cli(*args, "--max-batches", "3")
    assert code == 0, err
    assert "stopped after --max-batches" in out
    assert (tmp_path / "eval" / ".state-pgd2-8_255.pt").is_file()
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    claim = json.loads(out)
    assert claim["sessions"] == 2 and not (tmp_path / "eval" / ".state-pgd2-8_255.pt").exists()
    code, out, err = cli(*args, "--json", "--output-dir", tmp_path / "fresh")
    fresh = json.loads(out)
    assert (fresh["clean_acc"], fresh["robust_acc"], fresh["sessions"]) == (claim["clean_acc"], claim["robust_acc"], 1)


@pytest.mark.parametrize("extra, needle", [
    (("--eps", "0"), "invalid eps 0.0"),
    (("--eps", "1.5"), "invalid eps 1.5"),
    (("--eps", "big"), "invalid eps 'big'"),
    (("--attack", "fgsm"), "unknown attack 'fgsm'; valid: clean, pgd, apgd-ce, aa-standard, aa-rand"),
    (("--norm", "l1"), "unknown norm 'l1'"),
    (("--n-examples", "300"), "asked for 300 test images but fashion_mnist has 256"),
    (("--attack", "aa-standard", "--amp", "bf16"), "--amp bf16 is refused for aa-standard"),
    (("--attack", "aa-standard", "--steps", "5"), "--steps does not apply to attack aa-standard"),
    (("--model", "wide_resnet16_2"), "does not match model wide_resnet16_2: missing keys"),
    (("--model", "wide_resnet16_x"), "unknown model 'wide_resnet16_x'"),
    (("--dataset", "svhn"), "unknown dataset 'svhn'"),
    (("--batch-size", "0"), "invalid batch_size 0"),
])
def test_bad_input_is_one_line_exit_2(cli, checkpoint, mnist_like_dir, extra, needle):
    args = {"--model": NAME, "--checkpoint": str(checkpoint), "--dataset": "fashion_mnist",
            "--data-dir": str(mnist_like_dir), "--n-examples": "8"}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    code, out, err = cli("evaluate", *[t for kv in args.items() for t in kv], "--no-energy", "--no-progress")
    assert code == 2
    assert err.startswith("error: ") and needle in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("args, needle", [
    (("--checkpoint", "missing.pth", "--model", NAME, "--dataset", "mnist"), "checkpoint not found: missing.pth"),
    (("--run", "no/such/run"), "not a run directory (no config.yaml): no/such/run"),
    ((), "nothing to evaluate"),
])
def test_bad_sources(cli, args, needle):
    code, out, err = cli("evaluate", *args)
    assert code == 2 and err.startswith("error: ") and needle in err and err.count("\n") == 1
