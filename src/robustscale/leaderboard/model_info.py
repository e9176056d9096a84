"""RobustBench ``model_info/cifar10/Linf/*.json`` files: read and check them, or download them.

Each file is one leaderboard entry (its stem is the entry's name): ``architecture``, ``clean_acc``
and ``autoattack_acc`` (strings, in percent) are required; ``venue``, ``additional_data``,
``footnote`` and the rest are kept as they are. A directory without JSON files or a malformed file
is a :class:`~robustscale.errors.UserError` naming the file.
"""
from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..rundir import atomic_dir

REQUIRED = ("architecture", "clean_acc", "autoattack_acc")
GITHUB_API = "https://api.github.com/repos/RobustBench/robustbench/contents/model_info/cifar10/Linf"
RAW_URL = "https://raw.githubusercontent.com/RobustBench/robustbench/master/model_info/cifar10/Linf/{name}.json"
_YEAR_IN_NAME = re.compile(r"^[A-Za-z][A-Za-z\-]*?((?:19|20)\d\d)")
_YEAR_ANYWHERE = re.compile(r"\b((?:19|20)\d\d)\b")


@dataclass
class ModelInfo:
    """One leaderboard entry as RobustBench records it."""

    name: str
    path: Path | None
    architecture: str
    clean_acc: float
    aa_robust_acc: float
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def year(self) -> int | None:
        """Year of the entry's first public version: the year in its RobustBench name, else in its venue."""
        m = _YEAR_IN_NAME.match(self.name)
        if m:
            return int(m.group(1))
        m = _YEAR_ANYWHERE.search(str(self.raw.get("venue") or ""))
        return int(m.group(1)) if m else None


def _percent(value: Any, key: str, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"malformed model-info file {where}: {key} {value!r} is not a number") from None
    if not (math.isfinite(v) and 0 <= v <= 100):
        raise UserError(f"malformed model-info file {where}: {key} {v:g} is not a percentage in [0, 100]")
    return v


def parse_model_info(text: str, name: str, where: str, path: Path | None = None) -> ModelInfo:
    """One entry from the text of its JSON file; UserError naming ``where`` when it is malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed model-info file {where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"malformed model-info file {where}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED if data.get(k) in (None, "")]
    if missing:
        raise UserError(f"malformed model-info file {where}: lacks {', '.join(missing)}")
    return ModelInfo(name=name, path=path, architecture=str(data["architecture"]),
                     clean_acc=_percent(data["clean_acc"], "clean_acc", where),
                     aa_robust_acc=_percent(data["autoattack_acc"], "autoattack_acc", where), raw=data)


def read_model_info_dir(directory: str | os.PathLike) -> list[ModelInfo]:
    """Every ``*.json`` entry of ``directory``, sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"model-info directory not found: {d}")
    files = sorted(p for p in d.glob("*.json") if p.is_file())
    if not files:
        raise UserError(f"no model-info JSON files (*.json) in {d}")
    out = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"malformed model-info file {p}: cannot read it ({exc})") from None
        out.append(parse_model_info(text, p.stem, str(p), p))
    return out


def download_model_info(dest: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Download RobustBench's CIFAR-10 l-inf model_info files (GitHub) into ``dest`` (default: a cache folder).

    Lists the folder with the GitHub contents API, then fetches each file from raw.githubusercontent.com.
    The files land in a temporary folder renamed into place, so a broken download leaves nothing behind.
    """
    dest = Path(dest) if dest else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / \
        "robustscale" / "robustbench-cifar10-linf"

    def get(url: str) -> bytes:
        req = urllib.request.Request(url, headers={"User-Agent": "robustscale"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (fixed https URLs)
                return resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(f"cannot download {url}: {exc} (use --model-info DIR with a local copy)") from None

    try:
        listing = json.loads(get(GITHUB_API))
    except json.JSONDecodeError:
        raise UserError(f"unexpected answer from {GITHUB_API}: not JSON") from None
    names = sorted(str(item["name"])[:-5] for item in listing
                   if isinstance(item, dict) and str(item.get("name", "")).endswith(".json"))
    if not names:
        raise UserError(f"no model-info files listed at {GITHUB_API}")
    with atomic_dir(dest, mkdir=True) as tmp:
        for name in names:
            text = get(RAW_URL.format(name=name)).decode("utf-8")
            parse_model_info(text, name, RAW_URL.format(name=name))  # refuse a malformed file before keeping any
            (tmp / f"{name}.json").write_text(text, encoding="utf-8")
    for p in dest.glob("*.json"):  # files of an earlier download that RobustBench no longer lists
        if p.stem not in names:
            p.unlink()
    return dest
