"""Where a dataset's files live: search order, layout checks, and torchvision downloads.

Search order for every dataset (the first folder holding ALL the dataset's files wins):

1. the explicit ``data_dir`` (``--data-dir`` / ``cfg.data_dir``); one that does not exist is an
   error naming it (a typo must not train on data found elsewhere),
2. ``$ROBUSTSCALE_DATA``,
3. system folders (``/usr/share/datasets/fashion-mnist`` from the Debian/Ubuntu package
   ``dataset-fashion-mnist``),
4. the download cache ``$XDG_CACHE_HOME/robustscale/data`` (default ``~/.cache/robustscale/data``),
5. a torchvision download, only when ``download=True``, into the first of ``data_dir``,
   ``$ROBUSTSCALE_DATA``, the cache.

Each base folder is tried as-is and with the dataset's usual sub-folders
(``cifar-10-batches-py``, ``fashion-mnist``, torchvision's ``FashionMNIST/raw``, ...).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .info import DatasetName, dataset_info

ENV_VAR = "ROBUSTSCALE_DATA"

# System-wide installs, searched after $ROBUSTSCALE_DATA (module-level so tests can point them elsewhere).
SYSTEM_DIRS: dict[DatasetName, list[Path]] = {
    DatasetName.FASHION_MNIST: [Path("/usr/share/datasets/fashion-mnist")],
}

_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class Layout:
    """What a dataset folder must contain. ``files``: names, each alternative separated by ``|``."""

    subdirs: tuple[str, ...]  # tried under every base folder after the base itself
    files: tuple[str, ...]
    hint: str  # how to get the data, for the not-found message
    download: bool  # torchvision can fetch it


LAYOUTS: dict[DatasetName, Layout] = {
    DatasetName.CIFAR10: Layout(
        ("cifar-10-batches-py",),
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        "pass --download to fetch it with torchvision, or put torchvision's cifar-10-batches-py/ "
        "(data_batch_1..5, test_batch, batches.meta) under --data-dir or $ROBUSTSCALE_DATA",
        True),
    DatasetName.CIFAR100: Layout(
        ("cifar-100-python",),
        ("train", "test", "meta"),
        "pass --download to fetch it with torchvision, or put torchvision's cifar-100-python/ "
        "(train, test, meta) under --data-dir or $ROBUSTSCALE_DATA",
        True),
    DatasetName.FASHION_MNIST: Layout(
        ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
        tuple(f"{s}|{s}.gz" for s in _IDX_STEMS),
        "install the Debian/Ubuntu package dataset-fashion-mnist (apt install dataset-fashion-mnist), "
        "pass --download, or put train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in --data-dir",
        True),
    DatasetName.MNIST: Layout(
        ("mnist", "MNIST/raw"),
        tuple(f"{s}|{s}.gz" for s in _IDX_STEMS),
        "pass --download, or put train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in --data-dir",
        True),
    DatasetName.IMAGEFOLDER: Layout(
        ("imagefolder", "imagenet"),
        ("train/|val/",),
        "pass --data-dir ROOT with ROOT/train/<class>/<image> and ROOT/val/<class>/<image> "
        "(torchvision ImageFolder layout; it cannot be downloaded)",
        False),
}


def cache_dir() -> Path:
    """The download cache: ``$XDG_CACHE_HOME/robustscale/data`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "robustscale" / "data"


def base_dirs(name: str | DatasetName, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The base folders searched for ``name``, in order (duplicates removed)."""
    key = dataset_info(name).name
    bases: list[Path] = []
    if data_dir:
        bases.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        bases.append(Path(os.environ[ENV_VAR]).expanduser())
    bases.extend(SYSTEM_DIRS.get(key, []))
    if LAYOUTS[key].download:
        bases.append(cache_dir())
    seen, out = set(), []
    for b in bases:
        if str(b) not in seen:
            seen.add(str(b))
            out.append(b)
    return out


def candidate_dirs(name: str | DatasetName, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold the files: each base folder, then its usual sub-folders."""
    layout = LAYOUTS[dataset_info(name).name]
    return [d for base in base_dirs(name, data_dir) for d in (base, *(base / s for s in layout.subdirs))]


def resolve_file(folder: Path, entry: str) -> Path | None:
    """The first existing alternative of a ``"a|b"`` layout entry in ``folder`` (raw before .gz).

    Entries ending in ``/`` are folders, the others files.
    """
    for alt in entry.split("|"):
        path = folder / alt.rstrip("/")
        if (path.is_dir() if alt.endswith("/") else path.is_file()):
            return path
    return None


def _missing(folder: Path, layout: Layout) -> list[str]:
    return [entry.replace("|", " or ") for entry in layout.files if resolve_file(folder, entry) is None]


def locate(name: str | DatasetName, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding all of ``name``'s files, or None. Never downloads, never raises for absence."""
    layout = LAYOUTS[dataset_info(name).name]
    for folder in candidate_dirs(name, data_dir):
        if folder.is_dir() and not _missing(folder, layout):
            return folder
    return None


def download_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where ``--download`` puts files: ``data_dir``, else ``$ROBUSTSCALE_DATA``, else the cache."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return cache_dir()


def find_data_root(name: str | DatasetName, data_dir: str | os.PathLike | None = None,
                   download: bool = False) -> Path:
    """The folder that directly holds ``name``'s files (e.g. ``.../cifar-10-batches-py``).

    Searches the locations in the module docstring; with ``download=True`` and nothing found,
    fetches the data with torchvision (which checks the MD5 sums). Raises UserError saying where
    it looked and how to get the data.
    """
    key = dataset_info(name).name
    layout = LAYOUTS[key]
    if data_dir and not Path(data_dir).expanduser().exists() and not (download and layout.download):
        others = [str(b) for b in base_dirs(key) if b != Path(data_dir).expanduser()]
        elsewhere = f"drop --data-dir to search {', '.join(others)}" if others else "drop --data-dir"
        raise UserError(f"dataset {key.value} not found: --data-dir {data_dir} does not exist; fix the path or "
                        f"{elsewhere}; {layout.hint}")
    found = locate(key, data_dir)
    if found is not None:
        return found
    if download and layout.download:
        target = download_dir(data_dir)
        _torchvision_download(key, target)
        found = locate(key, target)
        if found is not None:
            return found
        raise UserError(f"downloaded {key.value} into {target} but its files are not where expected; "
                        f"looked in {', '.join(str(d) for d in candidate_dirs(key, target))}")
    # A folder with some but not all files is most likely what the user meant: say what it lacks.
    for folder in candidate_dirs(key, data_dir):
        missing = _missing(folder, layout) if folder.is_dir() else []
        if missing and len(missing) < len(layout.files):
            raise UserError(f"dataset {key.value} in {folder} is incomplete: missing {', '.join(missing)}; "
                            f"{layout.hint}")
    bases = base_dirs(key, data_dir)
    subs = ", ".join(s + "/" for s in layout.subdirs)
    looked = (f"looked in {', '.join(str(b) for b in bases)} (each with its {subs} sub-folder"
              f"{'s' if len(layout.subdirs) > 1 else ''})" if bases else "no --data-dir given")
    if not os.environ.get(ENV_VAR):
        looked += f"; ${ENV_VAR} is not set"
    no_dl = "; --download does not apply to imagefolder" if download and not layout.download else ""
    raise UserError(f"dataset {key.value} not found: {looked}; {layout.hint}{no_dl}")


def _torchvision_download(key: DatasetName, root: Path) -> None:
    """Fetch ``key`` with torchvision into ``root`` (it verifies MD5 sums); errors -> UserError."""
    import torchvision.datasets as tvd

    cls = {DatasetName.CIFAR10: tvd.CIFAR10, DatasetName.CIFAR100: tvd.CIFAR100,
           DatasetName.FASHION_MNIST: tvd.FashionMNIST, DatasetName.MNIST: tvd.MNIST}[key]
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # network, disk, checksum: one line for the user
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"downloading {key.value} into {root} failed: {reason}") from None
