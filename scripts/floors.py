"""The declared dependency floors (``name>=X`` in pyproject.toml), for `make test-floors`.

    python scripts/floors.py torch timm          # -> torch==2.14.1 timm==1.0.31 (pins for pip)
    python scripts/floors.py --check torch timm  # exit 1 unless the installed versions are the floors
"""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def floors() -> dict[str, str]:
    """``{normalised name: floor}`` of the ``[project] dependencies`` list."""
    text = PYPROJECT.read_text()
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, flags=re.S | re.M)
    if block is None:
        raise SystemExit(f"no dependencies list in {PYPROJECT}")
    out = {}
    for name, version in re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^",;\s]*)', block.group(1)):
        out[_normalise(name)] = version
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> tuple[int, ...]:
    """``2.14.1+cu130`` -> (2, 14, 1); ``2.0`` and ``2.0.0`` compare equal."""
    parts = [int(p) for p in re.match(r"[0-9]+(?:\.[0-9]+)*", version).group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def main(argv: list[str]) -> int:
    check = argv[:1] == ["--check"]
    names = argv[1:] if check else argv
    table = floors()
    missing = [n for n in names if _normalise(n) not in table]
    if missing:
        raise SystemExit(f"no `>=` floor declared in {PYPROJECT.name} for: {', '.join(missing)}")
    if not check:
        print(" ".join(f"{n}=={table[_normalise(n)]}" for n in names))
        return 0
    bad = []
    for name in names:
        installed = metadata.version(name)
        if _release(installed) != _release(table[_normalise(name)]):
            bad.append(f"{name} {installed} (floor {table[_normalise(name)]})")
    if bad:
        print(f"not at their floors: {', '.join(bad)}", file=sys.stderr)
        return 1
    print("floors: " + ", ".join(f"{n} {metadata.version(n)}" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
