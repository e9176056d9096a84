"""Sweep specs: expansion, validation at plan time, and the bill printed before anything runs."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml

from robustscale.sweep import load_spec

ROOT = Path(__file__).resolve().parents[2]
PAPER_SPEC = ROOT / "configs" / "paper" / "sweep-cifar10.yaml"

PAPER_MODELS = [f"wide_resnet{d}{dm}" for d in ("28_10", "34_10", "34_20", "70_16") for dm in ("", "_dm")]


def write_spec(path: Path, **data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny(tmp_path: Path, data_dir: Path, **over) -> dict:
    spec = {
        "name": "tiny",
        "base": {"dataset": "fashion_mnist", "data_dir": str(data_dir), "model": "wide_resnet16_1", "train_subset": 100,
                 "epochs": 3, "batch_size": 32, "eps": 0.1, "workers": 0, "progress": False, "energy": False},
        "grid": {"method": ["pgd", "trades"], "attack_steps": [1, 2]},
        "name_template": "{method}-k{attack_steps}",
        "output_dir": str(tmp_path / "out"),
        "evaluation": {"attack": "pgd", "n_examples": 64},
        "cost": {"device_type": "cpu"},
    }
    spec.update(over)
    return spec


def _paper_runs(methods=("pgd", "trades")):
    return [r for r in load_spec(PAPER_SPEC).runs if r.cfg.method.value in methods]


def test_paper_spec_is_the_studys_320_runs_plus_an_n_fgsm_row():
    spec = load_spec(PAPER_SPEC)
    assert len(spec.runs) == 320 + 32
    study = [r for r in spec.runs if r.cfg.method.value in ("pgd", "trades")]
    assert len(study) == 320
    got = {(r.cfg.model, r.cfg.method.value, r.cfg.attack_steps, r.cfg.epochs, r.cfg.ema_decay, r.cfg.cutmix_alpha,
            r.cfg.generated_data is not None) for r in study}
    schedules = [(110, None, 0.0), (400, 0.995, 1.0)]  # 400 epochs come with EMA 0.995 and CutMix
    want = {(m, meth, k, ep, ema, cm, gen) for m, meth, k, (ep, ema, cm), gen in
            itertools.product(PAPER_MODELS, ["pgd", "trades"], [1, 2, 5, 7, 10], schedules, [False, True])}
    assert got == want
    # The N-FGSM row: one step, the paper's k = 2 and alpha = eps, on the same models, schedules and data.
    row = [r for r in spec.runs if r.cfg.method.value == "n_fgsm"]
    assert {(r.cfg.model, r.cfg.epochs, r.cfg.ema_decay, r.cfg.cutmix_alpha, r.cfg.generated_data is not None)
            for r in row} == {(m, ep, ema, cm, gen) for m, (ep, ema, cm), gen in
                              itertools.product(PAPER_MODELS, schedules, [False, True])}
    assert all(r.cfg.attack_config().steps == 1 and r.cfg.attack_config().step_size == pytest.approx(8 / 255)
               and r.cfg.nfgsm_k == 2.0 and r.name.split("-")[1:3] == ["n_fgsm", "k1"] for r in row)
    assert len({r.name for r in spec.runs}) == 352 and len({r.config_hash for r in spec.runs}) == 352
    assert all(r.cfg.dataset == "cifar10" and r.cfg.eps == pytest.approx(8 / 255) for r in spec.runs)
    assert spec.evaluation.attack == "aa-standard" and spec.evaluation.n_examples == 10000


def test_paper_spec_covers_the_published_runs(paper_runs_csv):
    import pandas as pd

    df = pd.read_csv(paper_runs_csv)
    published = {(m, at, int(k), int(ep), str(s).lower() == "true") for m, at, k, ep, s in
                 df[["model", "at", "at_steps", "epochs", "synthetic_data"]].itertuples(index=False)}
    planned = {(r.cfg.model, r.cfg.method.value, r.cfg.attack_steps, r.cfg.epochs, r.cfg.generated_data is not None)
               for r in _paper_runs()}
    assert len(published) == 319 and published < planned and len(planned - published) == 1


def test_plan_cli_lists_the_paper_runs(cli):
    code, out, err = cli("sweep", "plan", PAPER_SPEC, "--no-cost", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["totals"]["runs"] == 352 and len(plan["runs"]) == 352
    assert plan["runs"][0]["name"] == "wide_resnet28_10-pgd-k1-e110-nogen"
    code, out, _ = cli("sweep", "plan", PAPER_SPEC, "--no-cost")
    assert code == 0 and "wide_resnet70_16_dm-trades-k10-e400-gen" in out and "352 runs" in out
    assert "wide_resnet70_16_dm-n_fgsm-k1-e400-gen" in out


def test_zip_seeds_labels_and_template(tmp_path, mnist_like_dir):
    data = tiny(tmp_path, mnist_like_dir, grid={"method": ["pgd"]},
                zip=[{"epochs": [1, 2], "ema_decay": [None, 0.99]}],
                seeds=2, name_template="{method}-e{epochs}-ema{ema_decay}-{generated_data}-s{seed}-eps{eps:.2f}")
    spec = load_spec(write_spec(tmp_path / "s.yaml", **data))
    assert [r.name for r in spec.runs] == ["pgd-e1-emanone-none-s0-eps0.10", "pgd-e1-emanone-none-s1-eps0.10",
                                          "pgd-e2-ema0.99-none-s0-eps0.10", "pgd-e2-ema0.99-none-s1-eps0.10"]
    assert [(r.cfg.epochs, r.cfg.ema_decay, r.cfg.seed) for r in spec.runs] == [
        (1, None, 0), (1, None, 1), (2, 0.99, 0), (2, 0.99, 1)]
    assert all(r.cfg.output_dir == str(tmp_path / "out") and r.cfg.name == r.name for r in spec.runs)
    # A mapping axis names its values by label.
    data2 = tiny(tmp_path, mnist_like_dir, grid={"generated_data": {"real": None, "gen": "x/gen.npz"}},
                 name_template="{generated_data}")
    spec2 = load_spec(write_spec(tmp_path / "s2.yaml", **data2))
    assert [(r.name, r.cfg.generated_data) for r in spec2.runs] == [("real", None), ("gen", "x/gen.npz")]


@pytest.mark.parametrize("change,message", [
    ({"grdi": {}}, "unknown key 'grdi' in .*valid: name, description, recipe, base, grid"),
    ({"grid": {"attack_stepz": [1]}}, "unknown axis 'attack_stepz' in grid of .*valid: .*attack_steps"),
    ({"grid": {"attack_steps": [1, 0]}}, r"run 1 \(attack_steps=0\): invalid attack_steps 0: must be >= 1"),
    ({"grid": {"method": ["pgd", "madry"]}}, r"unknown method 'madry'; valid: standard, pgd, trades, fgsm_rs"),
    ({"grid": {"model": ["wide_resnet16_1", "wrn_9000"]}}, r"run 1 \(model=wrn_9000\): unknown model 'wrn_9000'"),
    ({"name_template": "{method}"}, "run name collision in .*both named 'pgd'"),
    ({"name_template": "{method}-{flavour}"}, r"unknown field \{flavour\} in name_template"),
    ({"name_template": "{method}/{attack_steps}"}, "invalid run name 'pgd/1'"),
    ({"zip": {"epochs": [1, 2], "ema_decay": [None]}}, "zip axes .* must have equal lengths"),
    ({"executor": {"partition": "gpu", "gpus": 2}}, "unknown key 'gpus' in executor of .*valid: partition, gpus_per_job"),
    ({"evaluation": {"attack": "fgsm"}}, "unknown evaluation attack 'fgsm'; valid: clean, pgd"),
    ({"base": {"lr_bse": 0.1}}, "unknown TrainConfig key 'lr_bse' in base"),
    ({"seeds": [0, 0]}, "seeds in .* repeat a value"),
    ({"grid": {"workers": [0, 1]}, "name_template": "{method}-k{attack_steps}-w{workers}"},
     "have the same config .*an axis changes nothing"),
])
@pytest.mark.parametrize("command", ["plan", "run"])
def test_bad_specs_fail_at_plan_time(cli, tmp_path, mnist_like_dir, change, message, command):
    import re

    path = write_spec(tmp_path / "bad.yaml", **tiny(tmp_path, mnist_like_dir, **change))
    code, out, err = cli("sweep", command, path, "--executor" if command == "run" else "--no-cost",
                         "inline" if command == "run" else "--json")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()  # nothing written


def test_plan_bill_matches_hand_computation(cli, tmp_path, mnist_like_dir):
    from robustscale.compute import measure_step_flops
    from robustscale.config import TrainConfig
    from robustscale.data import dataset_normalization
    from robustscale.models import create_model

    path = write_spec(tmp_path / "s.yaml", **tiny(tmp_path, mnist_like_dir))
    code, out, err = cli("sweep", "plan", path, "--throughput", "50", "--json")
    assert code == 0, err
    plan = json.loads(out)
    prices = yaml.safe_load((ROOT / "src/robustscale/compute/prices.yaml").read_text())["presets"]["default"]
    cpu = {**prices["devices"].get("*", {}), **prices["devices"].get("cpu", {})}
    seen = (100 // 32) * 32 * 3  # drop-last batches of 32 from 100 images, 3 epochs
    total_flops = 0.0
    for run in plan["runs"]:
        cfg = TrainConfig.from_dict(run["config"])
        model = create_model(cfg.model, 10, 1, **dataset_normalization("fashion_mnist"))
        step = measure_step_flops(model, cfg, (1, 28, 28))
        assert run["images_seen"] == seen
        assert run["train_flops"] == pytest.approx(step.train_step_flops * seen, rel=1e-9)
        # the spec's evaluation, PGD-10 (1 restart) on 64 images: a clean forward, 10 attack steps, a scoring forward
        eval_flops = 64 * (step.forward_flops + 10 * step.attack_step_flops + step.forward_flops)
        assert run["eval_flops"] == pytest.approx(eval_flops, rel=1e-9)
        eval_hours = eval_flops / (50 * step.train_step_flops) / 3600  # at the training step's FLOP rate
        assert run["eval_device_hours"] == pytest.approx(eval_hours)
        hours = seen / 50 / 3600 + eval_hours
        assert run["device_hours"] == pytest.approx(hours) and run["device_type"] == "cpu"
        assert run["energy_kwh"] == pytest.approx(cpu["power_w"] * hours / 1000)
        assert run["electricity_usd"] == pytest.approx(cpu["power_w"] * hours / 1000 * prices["pue"]
                                                       * prices["electricity_usd_per_kwh"])
        assert run["cloud_usd_low"] == pytest.approx(hours * cpu["usd_per_hour_low"])
        assert run["cloud_usd_high"] == pytest.approx(hours * cpu["usd_per_hour_high"])
        total_flops += run["train_flops"]
    assert plan["totals"]["train_flops"] == pytest.approx(total_flops)
    # More attack steps cost more; TRADES costs more than PGD at the same steps.
    f = {r["name"]: r["train_flops_per_image"] for r in plan["runs"]}
    assert f["pgd-k1"] < f["pgd-k2"] and f["pgd-k1"] < f["trades-k1"] < f["trades-k2"]
    code, out, _ = cli("sweep", "plan", path, "--throughput", "50")
    assert code == 0 and "train PFLOPs" in out and "device-hours (cpu)" in out


def test_plan_uses_measured_throughput_from_the_store(cli, tmp_path, mnist_like_dir):
    from robustscale.store import open_store

    path = write_spec(tmp_path / "s.yaml", **tiny(tmp_path, mnist_like_dir))
    spec = load_spec(path)
    st = open_store(None, output_dir=spec.output_dir)
    # Two finished runs of the pgd-k1 family (other names, seeds): 100 and 300 images/s -> median 200.
    for i, (seen, wall) in enumerate([(1000, 10.0), (3000, 10.0)]):
        c = spec.runs[0].cfg.replace(name=f"old{i}", seed=10 + i)
        st.start_run(c, None)
        st.finish_run(c.name, {"train_images_seen": seen, "wall_seconds": wall, "train_flops": 1e12})
    code, out, err = cli("sweep", "plan", path, "--json")
    assert code == 0, err
    runs = {r["name"]: r for r in json.loads(out)["runs"]}
    assert runs["pgd-k1"]["throughput"] == pytest.approx(200.0)
    assert runs["pgd-k1"]["throughput_source"] == "store:family"
    # Other families fall back to the median FLOP rate of finished runs (1e12 FLOPs / 10 s).
    rate = 1e12 / 10.0
    assert runs["trades-k2"]["throughput_source"] == "store:flop-rate"
    assert runs["trades-k2"]["throughput"] == pytest.approx(rate / runs["trades-k2"]["train_flops_per_image"])
    assert runs["pgd-k1"]["store_status"] == "pending"


def test_plan_flop_rate_gives_each_run_its_own_throughput(cli, tmp_path, mnist_like_dir):
    """--flop-rate: img/s = FLOP/s / FLOPs per image, per run; --throughput still wins; cost.flop_rate in the spec."""
    path = write_spec(tmp_path / "s.yaml", **tiny(tmp_path, mnist_like_dir))
    code, out, err = cli("sweep", "plan", path, "--flop-rate", "2e12", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    for r in runs:
        assert r["throughput_source"] == "given:flop-rate"
        assert r["throughput"] == pytest.approx(2e12 / r["train_flops_per_image"])
        assert r["device_hours"] == pytest.approx((r["train_flops"] + r["eval_flops"]) / 2e12 / 3600)
    assert len({round(r["throughput"]) for r in runs}) > 1  # more attack steps: fewer images per second
    code, out, _ = cli("sweep", "plan", path, "--flop-rate", "2e12", "--throughput", "7", "--json")
    assert {r["throughput"] for r in json.loads(out)["runs"]} == {7.0}
    cost = {"device_type": "cpu", "flop_rate": 1e12}
    path = write_spec(tmp_path / "s2.yaml", **tiny(tmp_path, mnist_like_dir, cost=cost))
    code, out, _ = cli("sweep", "plan", path, "--json")
    assert {r["throughput_source"] for r in json.loads(out)["runs"]} == {"spec:flop-rate"}
    code, _, err = cli("sweep", "plan", path, "--flop-rate", "0")
    assert code == 2 and "invalid --flops-per-second 0" in err  # the flag's name now; --flop-rate is its alias


def test_store_errors_are_user_errors(cli, tmp_path, mnist_like_dir):
    from robustscale.store import open_store

    path = write_spec(tmp_path / "s.yaml", **tiny(tmp_path, mnist_like_dir))
    code, out, err = cli("sweep", "run", path, "--executor", "inline", "--store",
                         "postgresql://nobody@127.0.0.1:1/none")
    assert code == 2 and err.startswith("error: cannot reach store postgresql") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    # A run name taken in the store by a different config.
    spec = load_spec(path)
    st = open_store(None, output_dir=spec.output_dir)
    st.start_run(spec.runs[1].cfg.replace(epochs=7), None)
    before = st.list_runs()
    code, out, err = cli("sweep", "run", path, "--executor", "inline")
    assert code == 2 and "run name collision: 'pgd-k2'" in err and err.count("\n") == 1
    assert st.list_runs() == before and not (tmp_path / "out" / ".submitit").exists()
    code, out, err = cli("sweep", "plan", path, "--no-cost")
    assert code == 2 and "run name collision" in err


def test_plan_prices_by_default_from_the_documented_throughput(cli, tmp_path, mnist_like_dir):
    """No flag, no spec speed, no store runs: the device's figure in compute/throughput.yaml, said in the output."""
    table = yaml.safe_load((ROOT / "src/robustscale/compute/throughput.yaml").read_text())["devices"]
    path = write_spec(tmp_path / "s.yaml", **tiny(tmp_path, mnist_like_dir))
    code, out, err = cli("sweep", "plan", path, "--json")
    assert code == 0, err
    for r in json.loads(out)["runs"]:
        assert r["throughput_source"] == "default:cpu"
        assert r["throughput"] == pytest.approx(table["cpu"]["flops_per_second"] / r["train_flops_per_image"])
        assert r["device_hours"] > 0 and r["cloud_usd_high"] > 0
    code, out, _ = cli("sweep", "plan", path)
    assert code == 0 and "device-hours (cpu)" in out and "compute/throughput.yaml" in out and "unknown" not in out


def test_autoattack_is_priced_as_its_upper_bound():
    from robustscale.sweep.estimate import eval_flops_per_image
    from robustscale.sweep.spec import EvaluationOptions

    forward, step = 3.0, 5.0
    # APGD-CE 100 + APGD-T 9 x 100 + FAB-T 9 x 100 attack steps; FAB-T 900 and Square 5000 forwards; the clean one
    bound = forward + (100 + 900 + 900) * step + (1 + 9 + 900 + 5000) * forward
    assert eval_flops_per_image(EvaluationOptions(attack="aa-standard", n_examples=10), forward, step) == bound
    assert eval_flops_per_image(EvaluationOptions(attack="clean"), forward, step) == forward
    assert eval_flops_per_image(EvaluationOptions(attack="pgd", steps=20, restarts=2), forward, step) == \
        forward + 2 * (20 * step + forward)
    assert eval_flops_per_image(None, forward, step) == 0.0


def test_standard_runs_are_named_with_no_attack_steps(tmp_path, mnist_like_dir):
    spec = load_spec(write_spec(tmp_path / "s.yaml", **tiny(tmp_path, mnist_like_dir, grid={
        "method": ["standard", "pgd"], "attack_steps": [1]})))
    assert [r.name for r in spec.runs] == ["standard-k0", "pgd-k1"]


def test_cpu_sweep_spec_has_its_own_folder():
    sweep = load_spec(ROOT / "configs/sweeps/cpu-fashion-mnist.yaml")
    study = load_spec(ROOT / "configs/studies/cpu-fashion-mnist.yaml")
    assert Path(sweep.output_dir).resolve() != Path(study.output_dir).resolve()
