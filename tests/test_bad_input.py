"""Bad input to `train` and `evaluate`: exit 2, one line naming the bad value, and nothing written.

Every case runs in an empty working directory (where the default store ``runs/runs.db`` would go)
and checks that it is still empty afterwards.
"""
from __future__ import annotations

import pytest
import torch

from robustscale.cli import main

# Everything valid, tiny: a case that wrongly passed validation would train for a second, not an hour.
TRAIN_OK = ["--model", "wide_resnet16_1", "--dataset", "fashion_mnist", "--epochs", "1", "--train-subset", "8",
            "--batch-size", "8", "--eval-subset", "0", "--attack-steps", "1", "--workers", "0",
            "--progress", "false", "--energy", "false"]

TRAIN_CASES = {
    "model": (["--model", "no_such_model_xyz", "--dataset", "fashion_mnist"], "no_such_model_xyz"),
    "dataset": (["--dataset", "nope_set"], "nope_set"),
    "method": (["--method", "nope_method"], "nope_method"),
    "eps": (["--eps", "2"], "eps 2.0"),
    "norm": (["--norm", "l3"], "'l3'"),
    "epochs": (["--epochs", "0"], "epochs 0"),
    "batch-size": (["--batch-size", "-4"], "batch_size -4"),
    "attack-steps": (["--attack-steps", "0"], "attack_steps 0"),
    "lr": (["--lr-base", "abc"], "'abc'"),
    "sched": (["--sched", "nope_sched"], "nope_sched"),
    "compile": (["--compile", "maybe"], "'maybe'"),
    "unknown-key": (["--no-such-key", "3"], "no_such_key"),
    "config": (["--config", "missing.yaml"], "missing.yaml"),
    "resume": (["--resume", "no_such_run"], "no_such_run"),
    "opt": (["--opt", "nopeopt"], "nopeopt"),
    "data-dir": (["--data-dir", "no_such_dir"], "no_such_dir"),
    "generated-data": (["--generated-data", "missing.npz"], "missing.npz"),
    "price-preset": (["--price-preset", "nope_preset"], "nope_preset"),
    "device-type": (["--device-type", "nope_device"], "nope_device"),
    "country": (["--energy", "true", "--country", "XXX"], "'XXX'"),
    "amp": (["--amp", "fp16"], "fp16"),
    "ema-warmup": (["--ema-warmup", "true"], "ema_warmup True: needs ema_decay"),
}

EVALUATE_CASES = {
    "attack-before-missing": (["--model", "wide_resnet16_1", "--dataset", "fashion_mnist", "--attack", "nope_attack"],
                              "nope_attack"),
    "argument-order": (["--model", "nope_model", "--attack", "nope_attack"], "nope_model"),
    "checkpoint": (["--checkpoint", "missing.safetensors"], "missing.safetensors"),
    "run": (["--run", "no_such_run"], "no_such_run"),
    "model": (["--model", "nope_model", "--checkpoint", "{ckpt}"], "nope_model"),
    "dataset": (["--checkpoint", "{ckpt}", "--dataset", "nope_set"], "nope_set"),
    "eps": (["--checkpoint", "{ckpt}", "--eps", "5"], "eps 5.0"),
    "norm": (["--checkpoint", "{ckpt}", "--norm", "l3"], "'l3'"),
    "steps": (["--checkpoint", "{ckpt}", "--steps", "0"], "steps 0"),
    "batch-size": (["--checkpoint", "{ckpt}", "--batch-size", "0"], "batch_size 0"),
    "n-examples": (["--checkpoint", "{ckpt}", "--n-examples", "abc"], "'abc'"),
    "amp": (["--checkpoint", "{ckpt}", "--amp", "fp17"], "fp17"),
    "steps-for-aa": (["--checkpoint", "{ckpt}", "--attack", "aa-standard", "--steps", "5"], "--steps"),
    "device": (["--checkpoint", "{ckpt}", "--device", "nope_device"], "nope_device"),
    "data-dir": (["--checkpoint", "{ckpt}", "--data-dir", "no_such_dir"], "no_such_dir"),
    "store": (["--run", "{run}", "--store", "mysql://db"], "mysql"),
    "nothing": ([], "nothing to evaluate"),
}


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for var in ("ROBUSTSCALE_STORE", "ROBUSTSCALE_DATA", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return cwd


def _fails_cleanly(argv, needle, cwd, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert list(cwd.iterdir()) == [], "something was written"


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_bad_input_writes_nothing(case, empty_cwd, mnist_like_dir, capsys):
    args, needle = TRAIN_CASES[case]
    if case == "amp" and torch.cuda.is_available():
        pytest.skip("fp16 is valid where there is a GPU")
    ok = [] if case in ("model", "dataset") else TRAIN_OK + ["--data-dir", str(mnist_like_dir)]
    _fails_cleanly(["train", *ok, *args], needle, empty_cwd, capsys)


@pytest.mark.parametrize("case", sorted(EVALUATE_CASES))
def test_evaluate_bad_input_writes_nothing(case, empty_cwd, tmp_path, capsys):
    ckpt = tmp_path / "model.safetensors"  # validation runs before anything reads it
    ckpt.write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: wide_resnet16_1\ndataset: fashion_mnist\n")
    args, needle = EVALUATE_CASES[case]
    argv = [a.format(ckpt=ckpt, run=run) for a in args]
    _fails_cleanly(["evaluate", *argv], needle, empty_cwd, capsys)
