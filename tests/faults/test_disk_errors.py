"""A full or read-only disk: caught before the compute where it can be (the checkpoints' size is estimated
and checked), else one line naming the path and how to go on, exit 2, no traceback."""
from __future__ import annotations

import errno
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from robustscale import rundir
from robustscale.errors import UserError, as_disk_error

from .test_inputs import one_error_line


@pytest.fixture(scope="module")
def tmpfs_mounts():
    """Skip unless a size-limited tmpfs can be mounted in a private mount namespace here."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed: cannot mount a small filesystem")
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"no tmpfs mount here ({r.stderr.strip()[:120]})")


def test_train_on_a_disk_too_small_for_its_checkpoints_stops_before_training(tmpfs_mounts, tmp_path, mnist_like_dir,
                                                                              cli_env):
    out = tmp_path / "small"
    out.mkdir()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "fashion_mnist", "data_dir": str(mnist_like_dir), "model": "wide_resnet16_1",
                                   "train_subset": 64, "batch_size": 64, "epochs": 1, "eps": 0.1, "attack_steps": 1, "workers": 0,
                                   "energy": False, "progress": False, "name": "r", "output_dir": str(out)}))
    # 256 KB: more than a 1-byte probe needs, less than WRN-16-1's weights (~0.7 MB) twice over plus its state
    train = shlex.join([sys.executable, "-m", "robustscale", "train", "--config", str(cfg)])
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=256k tmpfs {shlex.quote(str(out))} && "
                        f"{train}; code=$?; ls -A {shlex.quote(str(out))}; exit $code"],
                       env=cli_env(), capture_output=True, text=True, timeout=300)
    one_error_line(r.returncode, r.stdout, r.stderr, "not enough free space for the checkpoints", str(out))
    assert "runs.db" not in r.stdout  # nothing recorded: the store was not created


def test_a_full_disk_reported_by_a_library_names_the_path(tmp_path):
    target = tmp_path / "last.safetensors"

    def write(tmp):  # what safetensors raises on ENOSPC
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                           "\"No space left on device\" })")

    with pytest.raises(OSError) as info:
        rundir.atomic_write(target, write)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # the temp file is gone
    assert as_disk_error(ValueError("bad value"), target) is None


def test_cli_turns_a_full_disk_anywhere_into_one_line(cli, monkeypatch, tmp_path):
    from robustscale.commands import models as models_cmd

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.json"))

    monkeypatch.setattr(models_cmd, "run", full)
    code, out, err = cli("models")
    one_error_line(code, out, err, str(tmp_path / "x.json"), "No space left on device", "free space")


def test_resume_of_a_run_killed_before_its_first_checkpoint_says_to_rerun(cli, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "r", "dataset": "fashion_mnist",
                                                      "model": "wide_resnet16_1", "eps": 0.1}))
    one_error_line(*cli("train", "--resume", run), "before its first checkpoint", "rerun")


def test_disk_error_message_carries_the_resume_command():
    from robustscale.errors import disk_error

    err = disk_error(OSError(errno.EROFS, "Read-only file system", "/x/last.safetensors"),
                     "resume with: robustscale train --resume /x")
    assert isinstance(err, UserError) and "/x/last.safetensors" in str(err) and "--resume /x" in str(err)
