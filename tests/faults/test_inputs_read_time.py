"""Bad input caught when it is read, before any compute: one line naming the value, exit 2, nothing written.

Non-UTF-8 files (binary, UTF-16) given as YAML or CSV, keys given twice in a YAML mapping, sweep spec values
`sweep run` would fail on after training (executor.max_parallel 0, evaluation batch_size/steps/restarts 0, a
step count for a clean evaluation), and flags that used to be accepted silently.
"""
from __future__ import annotations

import pytest
import yaml

from .test_inputs import one_error_line

BINARY = b"\x00\x01\x02\xff\xfe binary"
UTF16 = "epochs: 2\n".encode("utf-16")


def _spec(tmp_path, data_dir, **sections) -> str:
    spec = {"name": "s", "base": {"dataset": "fashion_mnist", "data_dir": str(data_dir), "model": "wide_resnet16_1",
                                  "epochs": 1, "eps": 0.1, "attack_steps": 1},
            "grid": {"train_subset": [64, 128]}, "output_dir": str(tmp_path / "runs"), **sections}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("content", [BINARY, UTF16], ids=["binary", "utf16"])
def test_non_utf8_files_are_one_line(cli, tmp_path, content):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    csv = tmp_path / "bad.csv"
    csv.write_bytes(content)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(content)
    (tmp_path / "x.csv").write_text("train_flops,aa_robust_acc\n1e15,40\n2e15,45\n4e15,50\n")
    for args in (("train", "--config", bad), ("sweep", "plan", bad), ("study", bad),
                 ("report", tmp_path / "x.csv", "-o", tmp_path / "r.html", "--prices", bad),
                 ("evaluate", "--run", run), ("plan", "--paper-runs", "--path", csv, "--budget-flops", "1e18")):
        target = csv if csv in args else (run / "config.yaml" if run in args else bad)
        one_error_line(*cli(*args), str(target), "not UTF-8")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r.html").exists()


def test_a_yaml_key_given_twice_is_refused(cli, tmp_path):
    bad = tmp_path / "dup.yaml"
    bad.write_text("epochs: 2\nbatch_size: 8\nepochs: 5\n")
    one_error_line(*cli("train", "--config", bad), "'epochs' is given twice", "line 1 and line 3")
    one_error_line(*cli("sweep", "plan", bad), "'epochs' is given twice")


@pytest.mark.parametrize("sections, fragment", [
    ({"executor": {"max_parallel": 0}}, "executor.max_parallel 0"),
    ({"executor": {"timeout_min": 0}}, "executor.timeout_min 0"),
    ({"executor": {"gpus_per_job": -1}}, "non-negative integer"),  # 0 is a CPU job (tests/sweep/test_slurm.py)
    ({"evaluation": {"attack": "pgd", "batch_size": 0}}, "evaluation batch_size 0"),
    ({"evaluation": {"attack": "pgd", "steps": 0}}, "evaluation steps 0"),
    ({"evaluation": {"attack": "apgd-ce", "restarts": 0}}, "evaluation restarts 0"),
    ({"evaluation": {"attack": "clean", "steps": 5}}, "does not apply to attack clean"),
    ({"base": {"dataset": "fashion_mnist", "model": "wide_resnet16_1", "epochs": 1, "eps": 0.1,
               "eval_subset": 1000000}}, "eval_subset 1000000"),
], ids=["max_parallel", "timeout", "gpus", "batch_size", "steps", "restarts", "clean-steps", "eval_subset"])
def test_spec_values_sweep_run_would_fail_on_are_refused_by_plan(cli, tmp_path, mnist_like_dir, sections, fragment):
    path = _spec(tmp_path, mnist_like_dir, **sections)
    one_error_line(*cli("sweep", "plan", path), fragment)
    one_error_line(*cli("sweep", "run", path, "--executor", "inline"), fragment)
    assert not (tmp_path / "runs").exists()


def test_flags_accepted_silently_before(cli, tmp_path, mnist_like_dir):
    afile = tmp_path / "afile"
    afile.write_text("x")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "run", "dataset": "fashion_mnist",
                                                     "model": "wide_resnet16_1", "eps": 0.1}))
    table = tmp_path / "runs.csv"
    table.write_text("train_flops,aa_robust_acc\n1e15,40\n2e15,45\n4e15,50\n")
    one_error_line(*cli("evaluate", "--run", run, "--seed", "-1"), "seed -1")
    one_error_line(*cli("fit", table, "--seed", "-1"), "--seed -1")
    one_error_line(*cli("fit", table, "--exclude-below", "nan"), "--exclude-below nan")
    one_error_line(*cli("fit", "mysql://host/db"), "'mysql://'")
    one_error_line(*cli("models", "--num-classes", "-1"), "--num-classes -1")
    one_error_line(*cli("datasets", "--data-dir", afile), str(afile), "not a folder")
    one_error_line(*cli("export", run, "--to", tmp_path / "out", "--private"), "--private", "--push-to-hub")
    one_error_line(*cli("export", run, "--to", ""), "--to is empty")
    one_error_line(*cli("train", "--name", "", "--dataset", "fashion_mnist", "--data-dir", mnist_like_dir,
                        "--output-dir", tmp_path / "o"), "--name is empty")
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists() and not (run / "eval").exists()


def test_export_of_a_run_with_a_corrupt_summary_names_it(cli, tmp_path):
    import torch

    from robustscale.config import TrainConfig
    from robustscale.data import dataset_normalization
    from robustscale.models import create_model
    from robustscale.train import save_weights

    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(name="run", model="wide_resnet16_1", dataset="fashion_mnist", eps=0.1, output_dir=str(tmp_path))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    torch.manual_seed(0)
    model = create_model("wide_resnet16_1", num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist"))
    for which in ("best", "last"):
        save_weights(run / f"{which}.safetensors", model, cfg, weights="raw")
    (run / "summary.json").write_text('{"status": "completed", "train_flops": 1e12')  # cut short
    one_error_line(*cli("export", run, "--to", tmp_path / "out"), str(run / "summary.json"), "not valid JSON")
    assert not (tmp_path / "out").exists()
