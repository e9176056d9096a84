"""More input that used to be accepted silently, fail after compute, or print badly: one line, exit 2,
nothing written, before any compute."""
from __future__ import annotations

import pytest


def one_error_line(code: int, err: str, *fragments: str) -> str:
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err and "\r" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def tiny_train(data_dir, out, *extra) -> list[str]:
    return ["train", "--dataset", "fashion_mnist", "--data-dir", data_dir, "--model", "wide_resnet16_1",
            "--epochs", "1", "--workers", "0", "--attack-steps", "1", "--eval-attack-steps", "1",
            "--progress", "false", "--energy", "false", "--output-dir", out, *map(str, extra)]


@pytest.mark.parametrize("extra,fragments", [
    # 512 - val_size training images: an "epoch" of batch 4096 would be several passes, billed as one.
    (["--train-subset", "64", "--batch-size", "128"], ["batch_size 128", "64 training images"]),
    # The per-epoch check on test images (with select_split val, the default, eval_subset is not read).
    (["--eval-subset", "5000", "--select-split", "test"], ["5000 test images", "has 256"]),
    # With select_split val it is not read, but a value beyond the dataset's test set is still a mistake.
    (["--eval-subset", "1000000"], ["eval_subset 1000000", "10,000 test images"]),
])
def test_train_refuses_more_images_than_the_data_has(cli, tmp_path, mnist_like_dir, extra, fragments):
    out = tmp_path / "out"
    code, _, err = cli(*tiny_train(mnist_like_dir, out, *extra))
    one_error_line(code, err, *fragments)
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_resume_with_a_garbage_metrics_line_names_it_and_rewrites_nothing(cli, tmp_path, mnist_like_dir):
    out = tmp_path / "out"
    code, _, err = cli(*tiny_train(mnist_like_dir, out, "--train-subset", "64", "--batch-size", "64",
                                   "--eval-subset", "32", "--name", "r"))
    assert code == 0, err
    run = out / "r"
    metrics = run / "metrics.jsonl"
    metrics.write_text("garbage\n" + metrics.read_text())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = cli("train", "--resume", run)
    one_error_line(code, err, str(metrics), "line 1", "'garbage'")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("rows,fragments", [
    ("a,1e15,30\nb,2e15,35\nc,abc,40\nd,inf,45\ne,8e15,50\nf,1.6e16,52\n",
     ["column 'train_flops'", "2 of 6", "'abc'", "'inf'"]),
    ("a,1e15,30\nb,2e15,35\nc,4e15,-inf\nd,8e15,45\ne,1.6e16,50\n", ["column 'aa_robust_acc'", "1 of 5", "'-inf'"]),
    ("a,1e15,0.30\nb,2e15,0.35\nc,4e15,0.40\nd,8e15,0.45\ne,1.6e16,0.56\n",
     ["column 'aa_robust_acc'", "fractions", "max 0.56", "percentages", "multiply"]),
])
def test_fit_refuses_text_infinities_and_fractions(cli, tmp_path, rows, fragments):
    csv = tmp_path / "runs.csv"
    csv.write_text("name,train_flops,aa_robust_acc\n" + rows)
    code, out, err = cli("fit", csv, "--bootstrap", "0")
    one_error_line(code, err, *fragments)
    assert out == ""


def test_fit_still_leaves_out_empty_cells(cli, tmp_path):
    csv = tmp_path / "runs.csv"
    csv.write_text("name,train_flops,aa_robust_acc\na,1e15,30\nb,2e15,35\nc,,40\nd,8e15,45\ne,1.6e16,50\n"
                   "f,3.2e16,52\n")
    code, out, err = cli("fit", csv, "--bootstrap", "0", "--law", "power")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("all runs"))
    assert line.split()[2] == "5", out  # 6 rows, the one with an empty train_flops left out


@pytest.mark.parametrize("value", ["-1e15", "-inf"])
def test_plan_parses_a_negative_budget_and_rejects_it(cli, value):
    code, _, err = cli("plan", "--paper-runs", "--budget-flops", value)
    one_error_line(code, err, f"--budget-flops {value!r}", "> 0")


def test_study_missing_paper_runs_is_one_line_without_a_bar(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("study", "--paper-runs", "--path", "missing.csv")
    one_error_line(code, err, "missing.csv")
    assert "paper reproduction" not in err


def test_sweep_slurm_without_sbatch_writes_nothing(cli, tmp_path, monkeypatch, mnist_like_dir):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch anywhere on it
    out = tmp_path / "sout"
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: s\nbase: {{dataset: fashion_mnist, model: wide_resnet16_1, data_dir: {mnist_like_dir}, "
                    f"epochs: 1}}\ngrid: {{method: [pgd]}}\noutput_dir: {out}\n")
    code, _, err = cli("sweep", "run", spec, "--executor", "slurm")
    one_error_line(code, err, "sbatch")
    assert not out.exists()
