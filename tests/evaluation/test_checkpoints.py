"""Checkpoint formats: our safetensors (metadata names the model), timm .pth / .pth.tar training
checkpoints (EMA / DDP prefixes / argparse args), our NormalizedModel's own state dict; and the
one-line errors for files that do not match."""
from __future__ import annotations

import argparse

import pytest
import torch

from robustscale.config import TrainConfig
from robustscale.errors import UserError
from robustscale.evaluation import load_model, read_checkpoint
from robustscale.data import dataset_normalization
from robustscale.models import create_model

NAME = "wide_resnet16_1"


def _model(seed: int):
    torch.manual_seed(seed)
    return create_model(NAME, num_classes=10, in_chans=1, **dataset_normalization("fashion_mnist")).eval()


def _same_outputs(a, b) -> bool:
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_timm_training_checkpoint_prefers_ema_and_strips_ddp(tmp_path):
    raw, ema = _model(0), _model(1)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 7, "arch": NAME, "args": argparse.Namespace(lr=0.1),
                "state_dict": {f"module.{k}": v for k, v in raw.model.state_dict().items()},
                "state_dict_ema": ema.model.state_dict()}, path)
    loaded, info = load_model(path, NAME, "fashion_mnist")
    assert info["weights"] == "ema" and _same_outputs(loaded, ema)
    loaded, info = load_model(path, NAME, "fashion_mnist", use_ema=False)
    assert info["weights"] == "model" and _same_outputs(loaded, raw)
    assert not loaded.training and info["num_classes"] == 10 and info["in_chans"] == 1
    assert len(info["checkpoint_sha256"]) == 64


def test_wrapper_state_dict_and_model_key(tmp_path):
    src = _model(2)
    torch.save(src.state_dict(), tmp_path / "wrapped.pth")  # NormalizedModel: keys start with "model."
    torch.save({"model": src.model.state_dict()}, tmp_path / "plain.pth")
    for name in ("wrapped.pth", "plain.pth"):
        loaded, _ = load_model(tmp_path / name, NAME, "fashion_mnist")
        assert _same_outputs(loaded, src)


def test_our_safetensors_name_their_model_and_dataset(tmp_path):
    from robustscale.train import save_weights

    src = _model(3)
    cfg = TrainConfig(model=NAME, dataset="fashion_mnist")
    save_weights(tmp_path / "best.safetensors", src, cfg, weights="raw")
    loaded, info = load_model(tmp_path / "best.safetensors")  # no model / dataset given
    assert (info["model"], info["dataset"], info["in_chans"]) == (NAME, "fashion_mnist", 1)
    assert info["mean"] == pytest.approx([0.2860]) and _same_outputs(loaded, src)


def test_mismatched_checkpoint_lists_keys(tmp_path):
    torch.save(_model(0).model.state_dict(), tmp_path / "wrn16_1.pth")
    with pytest.raises(UserError) as err:
        load_model(tmp_path / "wrn16_1.pth", "wide_resnet16_2", "fashion_mnist")
    msg = str(err.value)
    assert "does not match model wide_resnet16_2" in msg and "shape mismatch" in msg and "more)" in msg
    assert "\n" not in msg
    state = _model(0).model.state_dict()
    state.pop("fc.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"missing keys fc\.weight; unexpected keys extra\.weight"):
        load_model(tmp_path / "partial.pth", NAME, "fashion_mnist")


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")
    torch.save({"epoch": 3, "note": "hi"}, tmp_path / "empty.pth")
    with pytest.raises(UserError, match="holds no tensors"):
        read_checkpoint(tmp_path / "empty.pth")
    torch.save({"state_dict": _model(0).model.state_dict()}, tmp_path / "noema.pth")
    with pytest.raises(UserError, match="no EMA weights"):
        read_checkpoint(tmp_path / "noema.pth", use_ema=True)
