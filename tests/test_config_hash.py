"""Run identity: golden hashes, what enters the hash and what does not, every construction path
agreeing, and runs recorded by 0.1.0 still found after the upgrade.

``fixtures/v0_1_0/`` was written by robustscale 0.1.0 itself (commit a7b023e)::

    robustscale train --dataset fashion_mnist --data-dir D --model wide_resnet16_1 --train-subset 64 \\
        --epochs 1 --batch-size 32 --attack-steps 1 --eps 0.1 --eval-subset 16 --eval-attack-steps 1 \\
        --workers 0 --energy false --progress false --output-dir /tmp/old_out --name v010run

(its config.yaml, summary.json and the store runs.db; the weights are left out). The 0.1.0 hashes of
four more configs below were printed by the same commit.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from robustscale import config as config_module
from robustscale.config import (HASH_VERSION, HASHED_FIELDS, NON_SEMANTIC_KEYS, UNHASHED_FIELDS, V1_TRAINING,
                                TrainConfig, legacy_config_hash_v1)
from robustscale.errors import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "v0_1_0"

# (input of from_dict, hash today, hash of robustscale 0.1.0)
GOLDEN = [
    ({}, "a26eb90b7f5e13d3", "23a0b029187b80d0"),
    ({"model": "wide_resnet16_1", "dataset": "fashion_mnist", "method": "pgd", "attack_steps": 5, "epochs": 3,
      "batch_size": 64, "train_subset": 512, "seed": 1}, "3c60dc4b78b0a645", "b364c525b6838608"),
    ({"model": "wide_resnet16_1", "dataset": "fashion_mnist", "method": "standard", "epochs": 2, "name": "x",
      "output_dir": "/tmp/zz"}, "19e281b16954edeb", "8817c5a2dfa70ff9"),
    ({"model": "preact_resnet18", "dataset": "cifar10", "method": "trades", "eps": "8/255", "trades_beta": 6,
      "ema_decay": 0.995, "amp": "bf16"}, "6337dfbaacb9bdf8", "4e98400f70e20e98"),
]

# A hashed field's default never changes (a run recorded under the old default would silently take
# the new one): change one, and HASH_VERSION must go up with the old scheme kept as a lookup.
HASHED_DEFAULTS = {
    "seed": 0, "model": "wide_resnet16_2", "drop_rate": 0.0, "dataset": "cifar10", "train_subset": None,
    "augment": True, "input_size": None, "generated_data": None, "generated_fraction": 0.7, "cutmix_alpha": 0.0,
    "mixup_alpha": 0.0, "method": "pgd", "eps": 8 / 255, "norm": "linf", "attack_steps": 10, "step_size": None,
    "step_size_factor": 2.5, "random_start": True, "attack_bn_eval": True, "eps_warmup_epochs": 0,
    "trades_beta": 6.0, "epochs": 10, "warmup_epochs": 0, "batch_size": 128, "opt": "sgd", "momentum": 0.9,
    "weight_decay": 5e-4, "lr_base": 0.1, "lr": None, "sched": "cosine", "min_lr": 0.0, "label_smoothing": 0.0,
    "clip_grad": None, "ema_decay": None, "ema_warmup": False, "amp": "off", "eval_subset": 1000, "eval_attack_steps": 10,
    "eval_step_size_factor": 2.5, "nfgsm_k": 2.0, "grad_align_lambda": 0.2, "on_collapse": "warn",
    "collapse_ratio": 0.5, "collapse_gap": 10.0,
    "val_size": None, "select": "best", "select_split": "val", "nesterov": False, "weight_decay_1d": True,
}

# For every hashed field: (a config that reads it, another value) -> the hash must change.
CHANGES = {
    "seed": ({}, 1), "model": ({}, "wide_resnet16_1"), "drop_rate": ({}, 0.1), "dataset": ({}, "cifar100"),
    "train_subset": ({}, 100), "augment": ({}, False), "input_size": ({"dataset": "imagefolder"}, 64),
    "generated_data": ({}, "gen.npz"), "generated_fraction": ({"generated_data": "gen.npz"}, 0.5),
    "cutmix_alpha": ({}, 1.0), "mixup_alpha": ({}, 0.8), "method": ({}, "trades"), "eps": ({}, 4 / 255),
    "norm": ({}, "l2"), "attack_steps": ({}, 5), "step_size": ({}, 1 / 255), "step_size_factor": ({}, 1.5),
    "random_start": ({}, False), "attack_bn_eval": ({}, False), "eps_warmup_epochs": ({}, 2),
    "trades_beta": ({"method": "trades"}, 3.0), "epochs": ({}, 20), "warmup_epochs": ({}, 2),
    "batch_size": ({}, 256), "opt": ({}, "adamw"), "momentum": ({}, 0.8), "weight_decay": ({}, 0.0),
    "lr_base": ({}, 0.2), "lr": ({}, 0.05), "sched": ({}, "step"), "min_lr": ({}, 1e-5),
    "label_smoothing": ({}, 0.1), "clip_grad": ({}, 1.0), "ema_decay": ({}, 0.99), "ema_warmup": ({"ema_decay": 0.995}, True), "amp": ({}, "bf16"),
    "eval_subset": ({}, 500), "eval_attack_steps": ({}, 5), "eval_step_size_factor": ({}, 1.5),
    "nfgsm_k": ({"method": "n_fgsm"}, 1.0), "grad_align_lambda": ({"method": "grad_align"}, 0.5),
    "on_collapse": ({}, "stop"), "collapse_ratio": ({}, 0.3), "collapse_gap": ({}, 20.0),
    "val_size": ({}, 500), "select": ({}, "last"), "select_split": ({}, "test"), "nesterov": ({}, True),
    "weight_decay_1d": ({}, False),
}

# For every unhashed field: another value -> the same hash.
SAME = {
    "name": "other", "output_dir": "elsewhere", "data_dir": "/data", "download": True, "workers": 8,
    "test_subset": 100, "channels_last": False, "compile": "on", "eval_batch_size": 64, "deterministic": True,
    "energy": False, "country": "FRA", "price_preset": "spot", "device_type": "H100", "log_every": 7,
    "progress": False, "log_to": ["tensorboard"], "log_to_required": True,
    "micro_batch_size": 32, "dist_backend": "gloo",  # how the global batch is spread over processes
}


def _plain(value):
    return value.value if hasattr(value, "value") else value


def test_every_field_is_decided_and_tested():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(HASHED_FIELDS) | set(UNHASHED_FIELDS) == names and not set(HASHED_FIELDS) & set(UNHASHED_FIELDS)
    assert set(CHANGES) == set(HASHED_FIELDS), "a new hashed field needs a CHANGES entry here"
    assert set(SAME) == set(UNHASHED_FIELDS), "a new unhashed field needs a SAME entry here"
    assert "store" not in NON_SEMANTIC_KEYS and HASH_VERSION == 3


def test_hashed_defaults_are_pinned():
    assert {name: _plain(f.default) for f in dataclasses.fields(TrainConfig)
            if (name := f.name) in HASHED_FIELDS} == HASHED_DEFAULTS


@pytest.mark.parametrize("data,today,v1", GOLDEN, ids=["defaults", "pgd", "standard", "trades-bf16"])
def test_golden_hashes(data, today, v1):
    cfg = TrainConfig.from_dict(data)
    assert cfg.config_hash() == today
    # Today's defaults train differently from 0.1.0 (validation split, classical momentum, ...): no alias.
    assert cfg.known_hashes() == (today,) and not cfg.matches_hash(v1)
    old = TrainConfig.from_dict({**data, **V1_TRAINING})  # 0.1.0's training, asked for explicitly
    if old.trains_like_v1():  # (0.1.0 selected a standard run by PGD accuracy: that one cannot be asked for)
        assert old.known_hashes() == (old.config_hash(), v1) and old.matches_hash(v1)
    assert not old.matches_hash("0" * 16)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_each_hashed_field_changes_the_hash(field):
    base, value = CHANGES[field]
    cfg = TrainConfig.from_dict(base)
    assert cfg.replace(**{field: value}).config_hash() != cfg.config_hash()


@pytest.mark.parametrize("field", sorted(SAME))
def test_unhashed_fields_leave_the_hash_alone(field):
    assert TrainConfig.from_dict({field: SAME[field]}).config_hash() == TrainConfig().config_hash()


@pytest.mark.parametrize("method,ignored", [
    ("standard", {"attack_steps": 3, "step_size": 0.01, "step_size_factor": 1.5, "random_start": False,
                  "attack_bn_eval": False, "eps_warmup_epochs": 2, "trades_beta": 1.0}),
    ("fgsm_rs", {"attack_steps": 3, "step_size_factor": 1.5, "random_start": False, "trades_beta": 1.0}),
    ("pgd", {"trades_beta": 1.0}),
    ("trades", {"random_start": False}),
])
def test_fields_the_method_ignores_are_dropped(method, ignored):
    base = TrainConfig(method=method)
    for key, value in ignored.items():
        assert base.replace(**{key: value}).config_hash() == base.config_hash(), key


def test_overridden_and_unused_fields_are_dropped():
    assert TrainConfig(lr=0.05, lr_base=0.3).config_hash() == TrainConfig(lr=0.05).config_hash()
    assert TrainConfig(step_size=0.01, step_size_factor=1.5).config_hash() == TrainConfig(step_size=0.01).config_hash()
    assert TrainConfig(generated_fraction=0.3).config_hash() == TrainConfig().config_hash()
    # Standard training with the per-epoch PGD evaluation off reads no threat model at all.
    off = TrainConfig(method="standard", eval_attack_steps=0)
    assert off.replace(eps=0.1, norm="l2", eval_step_size_factor=1.0).config_hash() == off.config_hash()
    assert TrainConfig(method="standard").replace(eps=0.1).config_hash() != TrainConfig(method="standard").config_hash()


def test_construction_paths_agree(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr_base: 1\neps: 8/255\nepochs: '3'\namp: off\ncompile: true\n")
    paths = [TrainConfig(lr_base=1, eps=8 / 255, epochs=3, compile=True),
             TrainConfig(lr_base="1", eps="8/255", epochs=3.0, amp="OFF", compile="on"),
             TrainConfig.from_dict({"lr-base": 1, "eps": "8/255", "epochs": "3", "compile": "true"}),
             TrainConfig.from_yaml(path),
             TrainConfig().replace(lr_base=1, epochs=3, compile="on")]
    assert len({c.config_hash() for c in paths}) == 1
    assert all(c == paths[0] for c in paths) and isinstance(paths[0].lr_base, float) and paths[0].epochs == 3


@pytest.mark.parametrize("kwargs,named", [({"epochs": 0}, "epochs"), ({"batch_size": -1}, "batch_size"),
                                          ({"method": "nope"}, "nope"), ({"eps": "x"}, "eps"),
                                          ({"epochs": 1.5}, "epochs"), ({"mixup_alpha": float("nan")}, "mixup_alpha")])
def test_direct_construction_validates(kwargs, named):
    with pytest.raises(UserError, match=named):
        TrainConfig(**kwargs)


def test_a_new_field_with_its_default_changes_no_hash(monkeypatch):
    TrainConfig()  # resolve the type hints before adding to them
    Extended = dataclasses.make_dataclass("Extended", [("new_knob", float, 1.0)], bases=(TrainConfig,))
    monkeypatch.setitem(config_module.HASHED_FIELDS, "new_knob", lambda cfg: True)
    monkeypatch.setitem(config_module._DEFAULTS, "new_knob", 1.0)
    monkeypatch.setitem(config_module._TYPE_HINTS, "new_knob", float)
    for data, today, _ in GOLDEN:
        assert Extended(**TrainConfig.from_dict(data).to_dict()).config_hash() == today
    assert Extended(new_knob=2.0).config_hash() != GOLDEN[0][1]
    # ... and 0.1.0 cannot have recorded a run that sets it: no legacy alias then.
    assert len(Extended(new_knob=2.0, **V1_TRAINING).known_hashes()) == 1
    assert len(Extended(**V1_TRAINING).known_hashes()) == 2


# ---------------------------------------------------------------------------------------------- 0.1.0 runs
def _fixture_cfg() -> tuple[dict, TrainConfig]:
    data = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    return data, TrainConfig.from_dict({**data, **V1_TRAINING})  # today's config for 0.1.0's training


def test_the_v1_function_reproduces_what_0_1_0_wrote():
    import sqlite3

    data, cfg = _fixture_cfg()
    recorded = json.loads((FIXTURE / "summary.json").read_text())["config_hash"]
    with sqlite3.connect(FIXTURE / "runs.db") as conn:
        (row_hash, row_config), = conn.execute("select config_hash, config from runs").fetchall()
    assert recorded == row_hash == legacy_config_hash_v1(data) == legacy_config_hash_v1(json.loads(row_config))
    assert cfg.matches_hash(recorded) and cfg.config_hash() != recorded


def _fixture_spec(tmp_path: Path, **changes):
    from robustscale.sweep.spec import build_spec

    _, cfg = _fixture_cfg()
    base = {k: v for k, v in cfg.identity().items()}
    base.update(changes)
    return build_spec({"name": "upgrade", "base": base, "name_template": "v010run", "output_dir": str(tmp_path),
                       "evaluation": None})


def test_a_0_1_0_store_run_stays_done_for_sweep_run(tmp_path):
    from robustscale.store import open_store
    from robustscale.sweep.runner import check_collisions, sweep_states

    db = tmp_path / "runs.db"
    shutil.copy(FIXTURE / "runs.db", db)
    store = open_store(db, create=False)
    spec = _fixture_spec(tmp_path)
    check_collisions(spec, store)  # same name, same run: no collision
    (state,) = sweep_states(spec, store)
    assert state.state == "done" and state.row["name"] == "v010run"
    (other,) = sweep_states(_fixture_spec(tmp_path, epochs=2), store)
    assert other.state == "pending"
    # Starting (resuming) it records today's hash on the row.
    run = spec.runs[0]
    store.start_run(run.cfg, tmp_path / "v010run", resumed=True)
    assert store.get_run("v010run", details=False)["config_hash"] == run.config_hash


def test_a_0_1_0_run_folder_counts_as_finished(tmp_path):
    from robustscale.sweep.job import _finished_summary

    _, cfg = _fixture_cfg()
    run_dir = tmp_path / "v010run"
    run_dir.mkdir()
    shutil.copy(FIXTURE / "summary.json", run_dir / "summary.json")
    assert _finished_summary(run_dir, cfg)["config_hash"] == legacy_config_hash_v1(cfg.to_dict())
    assert _finished_summary(run_dir, cfg.replace(epochs=2)) is None


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_0_1_0_interrupted_run_resumes(tmp_path, mnist_like_dir, monkeypatch, one_thread):
    """A run 0.1.0 was training (state.pt, summary.json and the store carry 0.1.0's hash) resumes."""
    from robustscale.store import open_store
    from robustscale.tasks import PGDTask
    from robustscale.train import train

    monkeypatch.delenv("ROBUSTSCALE_STORE", raising=False)
    _, cfg = _fixture_cfg()
    cfg = cfg.replace(epochs=2, data_dir=str(mnist_like_dir), output_dir=str(tmp_path), name="old")
    original, calls = PGDTask.forward, {"n": 0}

    def forward(self, x, y):  # 2 steps per epoch: stop before the first step of epoch 2
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(PGDTask, "forward", forward)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    monkeypatch.delenv("ROBUSTSCALE_STORE", raising=False)
    old_hash, run_dir = legacy_config_hash_v1(cfg.to_dict()), tmp_path / "old"
    state = torch.load(run_dir / "state.pt", weights_only=False)
    torch.save({**state, "config_hash": old_hash}, run_dir / "state.pt")
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "config_hash": old_hash}))
    store = open_store(tmp_path / "runs.db", create=False)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("update runs set config_hash = ?", (old_hash,))
    resumed = train(None, resume=run_dir)
    assert resumed["status"] == "completed" and resumed["epochs_done"] == 2
    assert resumed["config_hash"] == cfg.config_hash()
