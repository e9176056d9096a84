"""Compute totals as a ledger: what a run has spent is the sum of segments saved with its checkpoints.

Every training session (the first start and each resume) measures its compute with one
:class:`~robustscale.compute.ComputeTracker`; at every checkpoint (the end of each epoch, an
interrupt) the segment measured since the previous one is closed with ``tracker.split()`` and
appended to ``Counters.compute_pieces`` *before* ``state.pt`` is written, so the ledger inside a
checkpoint covers exactly the work that checkpoint holds. A kill loses at most the segment in
progress, which a resume redoes and measures again; nothing is ever counted twice, and the FLOPs
(from the images seen at the checkpoint) and the device-hours describe the same work.

Each piece: ``wall_seconds``, ``device_hours``, ``energy_kwh``, ``emissions_kg`` (None when not
measured), ``device_name``, ``device_count``, the ``session`` (1, 2, ...), the 1-based ``epoch``
it belongs to (the epoch in progress when it was closed), and how the session ran (``world_size``,
``nodes``, ``micro_batch_size``, ``accumulation_steps``: a run may resume on another number of
ranks, and each segment says on how many it ran). Energy is every rank's own measurement summed,
so a multi-node segment covers every node. A run's totals are
``add_summaries(*pieces)``; an epoch's own figures (``ledger_*`` in its metrics row) are the sum of
its pieces, so the totals are the sum of the epochs' figures.
"""
from __future__ import annotations

from typing import Any

__all__ = ["LEDGER_KEYS", "LAYOUT_KEYS", "next_session", "close_segment", "epoch_figures", "sessions"]

LEDGER_KEYS = ("wall_seconds", "device_hours", "energy_kwh", "emissions_kg")
LAYOUT_KEYS = ("world_size", "nodes", "micro_batch_size", "accumulation_steps")


def next_session(counters) -> int:
    """The number of the session starting now (1 for a fresh run)."""
    return 1 + max((int(p.get("session") or 1) for p in counters.compute_pieces), default=0)


def close_segment(counters, tracker, session: int, restart: bool = True,
                  layout: dict[str, Any] | None = None) -> dict[str, Any]:
    """Close the tracker's current segment into the ledger (all ranks: energy is reduced over them);
    ``restart=False`` when the session ends there. ``layout``: the session's ``LAYOUT_KEYS``."""
    piece = {**tracker.split(restart=restart), "session": session, "epoch": counters.epoch + 1,
             **{k: v for k, v in (layout or {}).items() if k in LAYOUT_KEYS}}
    counters.compute_pieces = counters.compute_pieces + [piece]  # a new list: saved points keep theirs
    return piece


def _total(pieces: list[dict], key: str) -> float | None:
    values = [p.get(key) for p in pieces]
    return None if not values or any(v is None for v in values) else float(sum(values))


def epoch_figures(counters, epoch: int) -> dict[str, Any]:
    """``ledger_*``: the compute of epoch ``epoch`` (1-based) over every session that worked on it."""
    pieces = [p for p in counters.compute_pieces if p.get("epoch") == epoch]
    out = {f"ledger_{k}": _total(pieces, k) for k in LEDGER_KEYS}
    out["sessions"] = sorted({int(p.get("session") or 1) for p in pieces})
    return out


def sessions(counters) -> list[dict[str, Any]]:
    """One entry per training session: its compute and the epochs it worked on."""
    by_session: dict[int, list[dict]] = {}
    for p in counters.compute_pieces:
        by_session.setdefault(int(p.get("session") or 1), []).append(p)
    out = []
    for number, pieces in sorted(by_session.items()):
        epochs = [int(p["epoch"]) for p in pieces if p.get("epoch") is not None]
        out.append({"session": number, "kind": "train", **{k: _total(pieces, k) for k in LEDGER_KEYS},
                    **{k: pieces[0][k] for k in LAYOUT_KEYS if k in pieces[0]},
                    "epochs": [min(epochs), max(epochs)] if epochs else None, "segments": len(pieces)})
    return out
