"""`robustscale export` on a real tiny run: the timm layout, a plain-timm reload with identical logits, the
model card's claim and compute bill, `evaluate --checkpoint DIR`, and bad input (exit 2, nothing written)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import robustscale  # noqa: F401  (registers our architectures in timm)
from robustscale.hub import export_run, load_timm_folder, wilson_interval
from robustscale.scaling.format import fmt
from robustscale.train import load_run

from .conftest import train_tiny

PGD2 = ("--attack", "pgd", "--steps", "2", "--n-examples", "32", "--no-energy", "--no-progress", "--json")


def _test_images(data_dir: Path, n: int = 16) -> torch.Tensor:
    from robustscale.data import load_eval_tensors

    x, _ = load_eval_tensors("fashion_mnist", n, str(data_dir), False)
    return x


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_wilson_interval_matches_the_formula():
    # Wilson (1927) in float64 by hand: centre (p + z^2/2n) / (1 + z^2/n), half-width z/(1 + z^2/n) sqrt(...).
    z = 1.959963984540054
    for k, n in ((0, 32), (2, 32), (31, 32), (512, 1000), (1000, 1000)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = wilson_interval(100.0 * k / n, n)
        assert lo == pytest.approx(100 * max(centre - half, 0.0), abs=1e-9)
        assert hi == pytest.approx(100 * min(centre + half, 1.0), abs=1e-9)


def test_layout_and_plain_timm_reload_give_identical_logits(tiny_run, tmp_path, mnist_like_dir):
    import timm
    from PIL import Image

    out = tmp_path / "exports" / "tiny"
    result = export_run(tiny_run, out)
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert not _leftovers(out.parent) and result["timm_loadable"] and result["epoch"] == 1
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["architecture"] == "wide_resnet16_1" and cfg_json["num_classes"] == 10
    pre = cfg_json["pretrained_cfg"]
    assert pre["input_size"] == [1, 28, 28] and pre["crop_pct"] == 1.0
    # mean/std are the dataset's, as float32 values (what the run's normalization used)
    assert pre["mean"] == [float(torch.tensor(0.2860))] and pre["std"] == [float(torch.tensor(0.3530))]
    assert cfg_json["robustscale"]["dataset"] == "fashion_mnist" and cfg_json["robustscale"]["weights"] == "best"

    _, ours = load_run(tiny_run, "best")  # the run's own checkpoint, [0,1] pixels in
    plain = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    data_cfg = timm.data.resolve_data_config({}, model=plain)
    x = _test_images(mnist_like_dir)
    mean = torch.tensor(data_cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data_cfg["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = ours(x)
        # Same float32 weights, same elementwise (x - mean) / std, same kernels and threads: bit-identical.
        assert torch.equal(plain((x - mean) / std), expected)
        # A plain-timm user's pipeline: PIL image -> timm's eval transform (ToTensor + Normalize from config.json).
        transform = timm.data.create_transform(**data_cfg)
        images = [Image.fromarray((xi[0] * 255).round().to(torch.uint8).numpy(), mode="L") for xi in x]
        assert torch.equal(plain(torch.stack([transform(im) for im in images])), expected)
        # robustscale's own folder loader: normalization inside, [0,1] pixels in
        model01, info = load_timm_folder(out)
        assert torch.equal(model01(x), expected) and info["dataset"] == "fashion_mnist"


def test_model_card_shows_claim_and_compute_bill(tiny_run, tmp_path, cli):
    code, stdout, _ = cli("evaluate", "--run", tiny_run, *PGD2)
    assert code == 0
    claim = json.loads(stdout)
    out = tmp_path / "card"
    export_run(tiny_run, out, "best")
    card = (out / "README.md").read_text()
    summary = json.loads((tiny_run / "summary.json").read_text())
    # the Hub's metadata: a YAML block between --- lines, parsed as the Hub parses it
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "timm" and meta["license"] == "mit"
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"]
    assert {"image-classification", "adversarial-robustness", "adversarial-training-pgd"} <= set(meta["tags"])
    (result,) = meta["model-index"][0]["results"]  # the evaluation claim only, not the per-epoch check
    assert result["task"]["type"] == "image-classification" and result["dataset"]["split"] == "test"
    clean, robust = result["metrics"]
    assert clean["value"] == round(claim["clean_acc"], 2) and robust["value"] == round(claim["robust_acc"], 2)
    assert clean["args"]["n_examples"] == robust["args"]["n_examples"] == 32
    assert robust["args"]["eps"] == "0.1" and "(n = 32)" in robust["name"]
    # the claim of these weights, with n and its Wilson interval, one decimal everywhere
    lo, hi = wilson_interval(claim["clean_acc"], 32)
    rlo, rhi = wilson_interval(claim["robust_acc"], 32)
    assert robust["args"]["wilson_95_interval"] == [round(rlo, 2), round(rhi, 2)]
    row = (f"| {claim['attack_version']} | fashion_mnist | Linf, eps = 0.1 | 32 | {claim['clean_acc']:.1f} "
           f"[{lo:.1f}, {hi:.1f}] | {claim['robust_acc']:.1f} [{rlo:.1f}, {rhi:.1f}] |")
    assert row in card
    # the per-epoch check says what it scored: the validation images, with their count
    n_val = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])["eval_images"]
    assert f"per-epoch check during training, {n_val:,} validation images held out of the training split" in card
    assert "biased upwards" in card and "same test images" not in card
    # a snippet that works as pasted: the install line, the import, the folder's real path
    assert "pip install robustscale" in card and "PATH" not in card
    assert f'timm.create_model("local-dir:{out.resolve()}", pretrained=True)' in card
    assert card.index("import robustscale") < card.index("timm.create_model(")
    # the compute bill: measured FLOPs, and the 2024 convention recomputed here from the forward FLOPs F:
    # PGD-K costs 3F (K + 2) per image (K = 1 here)
    step = summary["step_flops"]
    flops_2024 = 3 * step["forward_flops"] * (1 + 2) * summary["train_images_seen"]
    assert f"| {fmt(summary['train_flops'])} FLOPs |" in card
    assert f"| {fmt(flops_2024)} FLOPs |" in card
    assert f"{fmt(summary['device_hours'])} h on 1 x {summary['device_name']} (cpu)" in card
    assert "energy | not measured (estimated" in card  # energy: false in this run
    assert f"{fmt(summary['cloud_usd_low'])} - {fmt(summary['cloud_usd_high'])} USD" in card
    assert "preset `default`" in card and "2024-2025" in card  # the price table and its date
    assert f"robustscale {robustscale.__version__}" in card and "| method | pgd-1 |" in card
    assert f"| images seen | {summary['train_images_seen']:,} |" in card


def test_evaluate_accepts_the_folder(tiny_run, tmp_path, cli):
    out = tmp_path / "ev"
    export_run(tiny_run, out)
    code, stdout, _ = cli("evaluate", "--checkpoint", tiny_run / "best.safetensors", "--output-dir",
                          tmp_path / "file-eval", "--eps", "0.1", *PGD2)
    assert code == 0
    from_file = json.loads(stdout)
    code, stdout, err = cli("evaluate", "--checkpoint", out, "--eps", "0.1", *PGD2)
    assert code == 0, err
    from_folder = json.loads(stdout)
    # same weights, images, attack and seed: the same per-example results
    assert (from_folder["clean_acc"], from_folder["robust_acc"]) == (from_file["clean_acc"], from_file["robust_acc"])
    assert from_folder["dataset"] == "fashion_mnist" and (out / "eval" / "pgd2-0.1.json").is_file()


def test_any_timm_folder_with_normalization_loads(tmp_path, cli, mnist_like_dir):
    import timm
    from timm.models import save_for_hf

    folder = tmp_path / "foreign"
    torch.manual_seed(0)
    net = timm.create_model("wide_resnet16_1", num_classes=10, in_chans=1,
                            pretrained_cfg_overlay={"input_size": (1, 28, 28)}).eval()
    save_for_hf(net, str(folder), safe_serialization=True, model_args={"num_classes": 10, "in_chans": 1},
                data_config={"input_size": (1, 28, 28), "mean": [0.5], "std": [0.25]})
    code, _, err = cli("evaluate", "--checkpoint", folder, *PGD2)
    assert code == 2 and "does not name its dataset; pass --dataset" in err
    model, info = load_timm_folder(folder, dataset="fashion_mnist")
    x = _test_images(mnist_like_dir, 4)
    with torch.no_grad():
        assert torch.equal(model(x), net((x - 0.5) / 0.25))
    assert info["mean"] == [0.5] and info["std"] == [0.25]
    config = json.loads((folder / "config.json").read_text())
    del config["pretrained_cfg"]["mean"]
    (folder / "config.json").write_text(json.dumps(config))
    code, _, err = cli("evaluate", "--checkpoint", folder, "--dataset", "fashion_mnist", *PGD2)
    assert code == 2 and "no mean/std" in err


def test_ema_weights(tmp_path, mnist_like_dir, cli):
    from safetensors.torch import load_file

    run = train_tiny(tmp_path / "runs", mnist_like_dir, "ema", ema_decay=0.9)
    out = tmp_path / "ema-out"
    code, _, err = cli("export", run, "--to", out, "--weights", "ema")
    assert code == 0, err
    exported, last = load_file(str(out / "model.safetensors")), load_file(str(run / "last.safetensors"))
    assert exported.keys() == last.keys() and all(torch.equal(exported[k], last[k]) for k in last)
    assert json.loads((out / "config.json").read_text())["robustscale"]["weights_kind"] == "ema"


def test_bad_input_exits_2_and_writes_nothing(tiny_run, tmp_path, cli):
    def refused(*args, message):
        code, _, err = cli("export", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err

    out = tmp_path / "out"
    refused(tiny_run, "--to", out, "--weights", "swa", message="unknown weights 'swa'; valid: best, last, ema")
    refused(tiny_run, "--to", out, "--weights", "ema", message="has no EMA weights")
    refused(tmp_path, "--to", out, message="not a run directory")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_run, partial)
    (partial / "best.safetensors").unlink()
    refused(partial, "--to", out, message="has no best.safetensors (weights 'best'); available: last")
    assert not out.exists() and not _leftovers(tmp_path)
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused(tiny_run, "--to", out, message="exists and is not empty; pass --force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    code, _, _ = cli("export", tiny_run, "--to", out, "--force", "--weights", "last")
    assert code == 0 and {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    assert not _leftovers(tmp_path)
