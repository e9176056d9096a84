"""Input the tools used to accept silently or blame on the wrong thing: one line naming it, exit 2.

Also the two misleading table cells of `runs list` (k of standard / FGSM-RS runs, clean % from the
largest evaluation).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from robustscale.config import TrainConfig
from robustscale.store import open_store


def one_error_line(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def cfg(tmp_path, name: str, **kw) -> TrainConfig:
    base = dict(name=name, output_dir=str(tmp_path / "runs"), model="wide_resnet16_1", dataset="fashion_mnist",
                eps=0.1, attack_steps=5, epochs=2)
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def store_db(tmp_path):
    """A store with a standard, an FGSM-RS and a PGD run (all done) and two evaluations of the PGD run."""
    db = tmp_path / "runs" / "runs.db"
    st = open_store(db)
    for name, method in (("std", "standard"), ("fgsm", "fgsm_rs"), ("pgd", "pgd")):
        st.start_run(cfg(tmp_path, name, method=method), tmp_path / "runs" / name)
        st.finish_run(name, {"status": "completed", "train_flops": 1e12, "clean_acc": 70.0, "eval_images": 100,
                             "pgd_robust_acc": 40.0})
    # The later evaluation is on 10 images: it must not replace training's 100-image clean accuracy.
    st.record_evaluation("pgd", {"attack": "pgd", "eps": 0.1, "n_examples": 10, "clean_acc": 30.0, "robust_acc": 20.0})
    st.close()
    return db


def test_runs_list_shows_the_steps_a_method_takes_and_the_largest_clean_evaluation(cli, store_db):
    code, out, err = cli("runs", "list", "--store", store_db)
    assert code == 0, err
    cells = {line.split()[0]: line.split() for line in out.splitlines()[1:4]}
    header = out.splitlines()[0].split()
    k = header.index("k")
    assert (cells["std"][k], cells["fgsm"][k], cells["pgd"][k]) == ("-", "1", "5")
    code, out, _ = cli("runs", "list", "--store", store_db, "--where", "name=pgd", "--json")
    (rec,) = json.loads(out)
    assert rec["clean_acc"] == 70.0 and rec["pgd_robust_acc"] == 20.0  # clean: 100 images beat 10
    st = open_store(store_db)
    st.record_evaluation("pgd", {"attack": "pgd", "eps": 0.1, "n_examples": 200, "clean_acc": 65.0, "robust_acc": 35.0})
    assert st.get_run("pgd")["clean_acc"] == 65.0  # a larger evaluation does replace it


@pytest.mark.parametrize("args,fragments", [
    (["runs", "export", "-o", "{tmp}/x.xlsx"], ["'.xlsx'", ".csv", ".parquet", ".json"]),
    (["runs", "export", "-o", "{tmp}/x.csv", "--status", "finished"],
     ["unknown --status 'finished'", "done", "interrupted", "stale", "all"]),
    (["runs", "list", "--where", "method=="], ["invalid filter 'method=='", "no value"]),
    (["runs", "list", "--where", "status=finished"], ["unknown status 'finished'", "interrupted"]),
])
def test_runs_rejects_what_it_used_to_ignore(cli, store_db, tmp_path, args, fragments):
    code, out, err = cli(*[a.format(tmp=tmp_path) for a in args], "--store", store_db)
    one_error_line(code, out, err, *fragments)
    assert not list(tmp_path.glob("x.*"))


def test_runs_export_json_and_double_equals(cli, store_db, tmp_path):
    code, out, err = cli("runs", "export", "--store", store_db, "-o", tmp_path / "x.json")
    assert code == 0, err
    assert sorted(pd.read_json(tmp_path / "x.json")["name"]) == ["fgsm", "pgd", "std"]
    code, out, _ = cli("runs", "list", "--store", store_db, "--where", "method==pgd", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["pgd"]


@pytest.mark.parametrize("text,fragment", [("", "defines no runs"), ("grid: {}\nbase: {epochs: 1}\n", "`grid`"),
                                           ("zip: []\nbase: {epochs: 1}\n", "`zip`")])
def test_empty_sweep_specs_are_errors(cli, tmp_path, text, fragment):
    spec = tmp_path / "empty.yaml"
    spec.write_text(text)
    code, out, err = cli("sweep", "plan", spec, "--no-cost")
    one_error_line(code, out, err, fragment, str(spec))


def test_fit_says_which_rows_it_dropped_and_why(cli, tmp_path):
    df = pd.DataFrame({"name": list("abcd"), "train_flops": [1e15, 2e15, np.nan, 8e15],
                       "aa_robust_acc": [40.0, np.nan, 45.0, 50.0]})
    df.to_csv(tmp_path / "nan.csv", index=False)
    code, out, err = cli("fit", tmp_path / "nan.csv", "--bootstrap", "0")
    one_error_line(code, out, err, "2 run(s) left (of 4 rows: 2 with a missing (NaN) aa_robust_acc or train_flops)",
                   "needs at least 3 runs")


def test_fit_of_collapsed_runs_explains_why_none_is_left(cli, tmp_path):
    db = tmp_path / "runs" / "runs.db"
    st = open_store(db)
    st.start_run(cfg(tmp_path, "zero"), tmp_path / "runs" / "zero")
    st.finish_run("zero", {"status": "completed", "train_flops": 1e12})
    st.record_evaluation("zero", {"attack": "aa-standard", "eps": 0.1, "n_examples": 100, "clean_acc": 10.0,
                                  "robust_acc": 0.0})
    code, out, err = cli("fit", db, "--bootstrap", "0")
    one_error_line(code, out, err, "0 run(s) left (of 1 row: 1 with aa_robust_acc < 10 excluded as collapsed",
                   "--exclude-below 0")


@pytest.mark.parametrize("target", ["150", "-5"])
def test_extrapolate_target_outside_percent(cli, tmp_path, target):
    pd.DataFrame({"name": ["a"], "train_flops": [1e15], "aa_robust_acc": [40.0]}).to_csv(tmp_path / "r.csv")
    for law in ("power", "saturating"):
        code, out, err = cli("extrapolate", tmp_path / "r.csv", "--target", target, "--law", law)
        one_error_line(code, out, err, f"invalid --target {target}", "in (0, 100)")


def test_unknown_flag_is_blamed_on_the_flag(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"dataset": "fashion_mnist", "model": "wide_resnet16_1"}))
    code, out, err = cli("train", "--config", recipe, "--learning-rate", "0.1", "--output-dir", tmp_path / "out")
    one_error_line(code, out, err, "unknown flag --learning-rate", "did you mean --lr")
    assert str(recipe) not in err and not (tmp_path / "out").exists()


def test_missing_data_dir_is_named(cli, tmp_path):
    from robustscale.data import find_data_root
    from robustscale.errors import UserError

    with pytest.raises(UserError, match=f"--data-dir {tmp_path / 'nope'} does not exist"):
        find_data_root("fashion_mnist", tmp_path / "nope")


def test_evaluate_on_a_missing_gpu_is_one_line(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg(tmp_path, "run").to_dict()))
    code, out, err = cli("evaluate", "--run", run_dir, "--device", "cuda")
    one_error_line(code, out, err, "--device cuda", "no CUDA GPU", "--device cpu")
    code, out, err = cli("evaluate", "--run", run_dir, "--device", "tpu")
    one_error_line(code, out, err, "'tpu'")
