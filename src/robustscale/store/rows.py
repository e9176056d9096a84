"""Row writes shared by :class:`~robustscale.store.core.Store` and the folder sync: a run's row,
its epochs and evaluations, and the headline metrics a run takes from its evaluations."""
from __future__ import annotations

import datetime as dt
from pathlib import PurePath
from typing import Any, Mapping

from sqlalchemy import Connection, delete, select, update

from ..errors import UserError
from ..schema import EPS_TOL, HEADLINE_ATTACKS, finite_float, headline, training_check
from .records import LOCAL_SOURCE, coerce_value, robust_of
from .tables import EPOCH_VALUE_COLUMNS, epochs, evaluations, runs

# Attacks whose result fills the run's headline columns (the others stay in `evaluations`): schema's rule.
AA_ATTACKS = HEADLINE_ATTACKS["aa_robust_acc"]
PGD_ATTACKS = HEADLINE_ATTACKS["pgd_robust_acc"]
APGD_CE_ATTACKS = HEADLINE_ATTACKS["apgd_ce_robust_acc"]


def select_run(conn: Connection, name: str, lock: bool = False) -> dict[str, Any] | None:
    stmt = select(runs).where(runs.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return None if row is None else dict(row)


def check_same_config(row: Mapping[str, Any], name: str, chash: str, known: tuple[str, ...] = ()) -> None:
    if row["source"] != LOCAL_SOURCE:
        raise UserError(f"run name {name!r} is taken by an imported run (source {row['source']}); pick another name")
    if row["config_hash"] is not None and row["config_hash"] not in (chash, *known):
        raise UserError(f"run name {name!r} is already in the store with a different config "
                        f"(hash {row['config_hash']}, this one {chash}); pick another name")


def insert_epoch(conn: Connection, run_id: int, epoch: int, metrics: Mapping[str, Any], now: dt.datetime) -> None:
    typed = {k: finite_float(metrics.get(k)) for k in EPOCH_VALUE_COLUMNS}
    if typed["train_images_seen"] is not None:
        typed["train_images_seen"] = int(typed["train_images_seen"])
    conn.execute(epochs.insert().values(run_id=run_id, epoch=int(epoch), recorded_at=now, metrics=dict(metrics),
                                        **typed))


def check_claim(name: str, claim: Mapping[str, Any]) -> None:
    if not str(claim.get("attack") or "").strip():
        raise UserError(f"an evaluation claim of {name!r} needs an `attack`")
    if finite_float(claim.get("eps")) is None or claim.get("n_examples") is None:
        raise UserError(f"evaluation claim for {name!r} lacks eps or n_examples")


def claim_file(claim: Mapping[str, Any]) -> str | None:
    """The file name of a claim in its run's ``eval/`` folder (``apgd-ce-0.1.json``), which names one
    evaluation of a run: evaluating the same attack again overwrites it, so the store keeps one row per file."""
    for key in ("claim_file", "claim_path"):
        if claim.get(key):
            return PurePath(str(claim[key])).name
    return None


def _stored_claim(claim: Mapping[str, Any]) -> dict[str, Any]:
    """The claim as stored: its file's content, with the file's name (``claim_file``), without the
    in-memory extras of ``evaluate`` (its path and completeness flag)."""
    out = {k: v for k, v in claim.items() if k not in ("claim_path", "complete")}
    name = claim_file(claim)
    if name is not None:
        out["claim_file"] = name
    return out


def upsert_evaluation(conn: Connection, run_id: int, claim: Mapping[str, Any], now: dt.datetime) -> None:
    """Insert or replace the evaluation row of the claim's file (else of (run, attack, eps, n_examples))."""
    attack = str(claim["attack"]).strip().lower()
    eps, n = finite_float(claim["eps"]), int(claim["n_examples"])
    name = claim_file(claim)
    same = []
    for r in conn.execute(select(evaluations.c.id, evaluations.c.attack, evaluations.c.eps, evaluations.c.n_examples,
                                 evaluations.c.claim).where(evaluations.c.run_id == run_id)).mappings():
        stored_file = claim_file(r["claim"]) if isinstance(r["claim"], Mapping) else None
        if (name is not None and stored_file == name) or (
                (name is None or stored_file is None) and r["attack"] == attack and r["n_examples"] == n
                and r["eps"] is not None and abs(r["eps"] - eps) < EPS_TOL):
            same.append(r["id"])
    values = dict(
        run_id=run_id, attack=attack, eps=eps, norm=claim.get("norm"), n_examples=n,
        clean_acc=finite_float(claim.get("clean_acc")), robust_acc=finite_float(robust_of(claim)),
        per_attack=claim.get("stage_acc") or claim.get("per_attack"),
        eval_flops=finite_float(claim.get("eval_flops")), wall_seconds=finite_float(claim.get("wall_seconds")),
        device_hours=finite_float(claim.get("device_hours")), energy_kwh=finite_float(claim.get("energy_kwh")),
        created_at=now, claim=_stored_claim(claim))
    if same[1:]:
        conn.execute(delete(evaluations).where(evaluations.c.id.in_(same[1:])))
    if not same:
        conn.execute(evaluations.insert().values(**values))
    else:
        conn.execute(update(evaluations).where(evaluations.c.id == same[0]).values(**values))


def refresh_headline(conn: Connection, run_id: int) -> None:
    """Set the run's headline columns from training's check and its evaluations (``schema.headline``)."""
    row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().one()
    evals = [{**dict(r), "created_at": (r["claim"] or {}).get("created_at") if isinstance(r["claim"], Mapping)
              else None}
             for r in conn.execute(select(evaluations).where(evaluations.c.run_id == run_id)).mappings()]
    values = headline(training_check(row["summary"]), evals, row["eps"])
    conn.execute(update(runs).where(runs.c.id == run_id).values(
        **{k: coerce_value(k, v) for k, v in values.items()}))
