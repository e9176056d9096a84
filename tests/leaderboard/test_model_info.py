"""RobustBench model_info files: what is read, and one clear line for every malformed file."""
from __future__ import annotations

import json

import pytest

from robustscale.errors import UserError
from robustscale.leaderboard.model_info import read_model_info_dir

GOOD = {"name": "Some Paper", "venue": "NeurIPS 2021", "architecture": "WideResNet-28-10", "eps": "8/255",
        "clean_acc": "87.50", "autoattack_acc": "63.44", "additional_data": False}


def write(folder, name, data):
    path = folder / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_entries_are_read_with_percentages_and_year(tmp_path):
    write(tmp_path, "Gowal2021Improving_28_10_ddpm_100m", GOOD)
    write(tmp_path, "Standard", {**GOOD, "venue": "N/A"})
    (tmp_path / "notes.txt").write_text("not an entry")
    infos = read_model_info_dir(tmp_path)
    assert [i.name for i in infos] == ["Gowal2021Improving_28_10_ddpm_100m", "Standard"]
    assert infos[0].aa_robust_acc == 63.44 and infos[0].clean_acc == 87.5
    assert infos[0].year == 2021  # from the name
    assert infos[1].year is None  # no year in the name or the venue
    assert infos[0].raw["additional_data"] is False


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="no model-info JSON files"):
        read_model_info_dir(tmp_path)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({**GOOD, "autoattack_acc": "n/a"}, "autoattack_acc 'n/a' is not a number"),
    ({**GOOD, "clean_acc": "187"}, "not a percentage"),
    ({k: v for k, v in GOOD.items() if k != "architecture"}, "lacks architecture"),
])
def test_a_malformed_file_is_named(tmp_path, content, message):
    write(tmp_path, "A2020Good", GOOD)
    bad = write(tmp_path, "B2021Bad", content)
    with pytest.raises(UserError, match=message) as exc:
        read_model_info_dir(tmp_path)
    assert str(bad) in str(exc.value)


class _Answer:
    def __init__(self, body: bytes):
        self.body = body

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self):
        return self.body


def _fake_github(monkeypatch, files: dict[str, object]):
    """urlopen answering the contents API with ``files``' names and each raw URL with its content."""
    import urllib.request

    from robustscale.leaderboard import model_info

    def urlopen(req, timeout=None):
        url = req.full_url
        if url == model_info.GITHUB_API:
            return _Answer(json.dumps([{"name": f"{n}.json"} for n in files]).encode())
        name = url.rsplit("/", 1)[1][:-5]
        data = files[name]
        return _Answer((data if isinstance(data, str) else json.dumps(data)).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_a_download_replaces_the_entries_and_keeps_other_files(tmp_path, monkeypatch):
    from robustscale.leaderboard.model_info import download_model_info

    dest = tmp_path / "cache" / "linf"
    dest.mkdir(parents=True)
    write(dest.parent, "unrelated", GOOD)  # beside the folder: untouched
    write(dest, "Old2019Gone", GOOD)  # no longer listed: removed
    write(dest, "A2020Good", {**GOOD, "clean_acc": "50"})  # listed again: replaced
    (dest / "notes.txt").write_text("mine")
    _fake_github(monkeypatch, {"A2020Good": GOOD, "B2021Good": GOOD})
    assert download_model_info(dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["A2020Good.json", "B2021Good.json", "notes.txt"]
    assert json.loads((dest / "A2020Good.json").read_text()) == GOOD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["linf", "unrelated.json"]  # no temp folder left


def test_a_malformed_download_keeps_nothing(tmp_path, monkeypatch):
    from robustscale.leaderboard.model_info import download_model_info

    dest = tmp_path / "linf"
    _fake_github(monkeypatch, {"A2020Good": GOOD, "B2021Bad": "{not json"})
    with pytest.raises(UserError, match="not valid JSON"):
        download_model_info(dest)
    assert list(tmp_path.iterdir()) == []
