"""Row writes shared by :class:`~robustscale.store.core.Store` and the folder sync: a run's row,
its epochs and evaluations, and the headline metrics a run takes from its evaluations."""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping

from sqlalchemy import Connection, func, select, update

from ..errors import UserError
from ..schema import COLLAPSE_THRESHOLD_ACC, collapsed_at_selected
from .records import LOCAL_SOURCE, _flatten, _float, _robust_of
from .tables import EPOCH_VALUE_COLUMNS, epochs, evaluations, runs

# Attacks whose result fills the run's headline columns (the others stay in `evaluations`).
AA_ATTACKS = ("aa-standard", "autoattack", "aa")
PGD_ATTACKS = ("pgd",)
APGD_CE_ATTACKS = ("apgd-ce",)  # AutoAttack's first stage alone: what studies fit on
_EPS_TOL = 1e-6


def _select_run(conn: Connection, name: str, lock: bool = False) -> dict[str, Any] | None:
    stmt = select(runs).where(runs.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return None if row is None else dict(row)


def _check_same_config(row: Mapping[str, Any], name: str, chash: str, known: tuple[str, ...] = ()) -> None:
    if row["source"] != LOCAL_SOURCE:
        raise UserError(f"run name {name!r} is taken by an imported run (source {row['source']}); pick another name")
    if row["config_hash"] is not None and row["config_hash"] not in (chash, *known):
        raise UserError(f"run name {name!r} is already in the store with a different config "
                        f"(hash {row['config_hash']}, this one {chash}); pick another name")


def _insert_epoch(conn: Connection, run_id: int, epoch: int, metrics: Mapping[str, Any], now: dt.datetime) -> None:
    typed = {k: _float(metrics.get(k)) for k in EPOCH_VALUE_COLUMNS}
    if typed["train_images_seen"] is not None:
        typed["train_images_seen"] = int(typed["train_images_seen"])
    conn.execute(epochs.insert().values(run_id=run_id, epoch=int(epoch), recorded_at=now, metrics=dict(metrics),
                                        **typed))


def _check_claim(name: str, claim: Mapping[str, Any]) -> None:
    if not str(claim.get("attack") or "").strip():
        raise UserError(f"an evaluation claim of {name!r} needs an `attack`")
    if _float(claim.get("eps")) is None or claim.get("n_examples") is None:
        raise UserError(f"evaluation claim for {name!r} lacks eps or n_examples")


def _upsert_evaluation(conn: Connection, run_id: int, claim: Mapping[str, Any], now: dt.datetime) -> None:
    """Insert or replace the evaluation row of (run, attack, eps, n_examples)."""
    attack = str(claim["attack"]).strip().lower()
    eps, n = _float(claim["eps"]), int(claim["n_examples"])
    existing = conn.execute(select(evaluations.c.id).where(
        evaluations.c.run_id == run_id, evaluations.c.attack == attack,
        func.abs(evaluations.c.eps - eps) < _EPS_TOL, evaluations.c.n_examples == n)).scalar()
    values = dict(
        run_id=run_id, attack=attack, eps=eps, norm=claim.get("norm"), n_examples=n,
        clean_acc=_float(claim.get("clean_acc")), robust_acc=_float(_robust_of(claim)),
        per_attack=claim.get("stage_acc") or claim.get("per_attack"),
        eval_flops=_float(claim.get("eval_flops")), wall_seconds=_float(claim.get("wall_seconds")),
        device_hours=_float(claim.get("device_hours")), energy_kwh=_float(claim.get("energy_kwh")),
        created_at=now, claim=dict(claim))
    if existing is None:
        conn.execute(evaluations.insert().values(**values))
    else:
        conn.execute(update(evaluations).where(evaluations.c.id == existing).values(**values))


def _refresh_headline(conn: Connection, run_id: int) -> None:
    """Fill the run's headline metrics from its evaluations (largest complete one per attack)."""
    row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().one()
    evals = [dict(r) for r in conn.execute(select(evaluations).where(evaluations.c.run_id == run_id)).mappings()]
    run_eps = row["eps"]

    def best(attacks: tuple[str, ...]):
        cands = [e for e in evals if e["attack"] in attacks and e["robust_acc"] is not None
                 and (run_eps is None or abs(e["eps"] - run_eps) < _EPS_TOL)]
        return max(cands, key=lambda e: (e["n_examples"], e["id"])) if cands else None

    aa, pgd, apgd = best(AA_ATTACKS), best(PGD_ATTACKS), best(APGD_CE_ATTACKS)
    values: dict[str, Any] = {}
    if aa is not None:
        values.update(aa_robust_acc=aa["robust_acc"], aa_n_examples=aa["n_examples"])
    if pgd is not None:
        values.update(pgd_robust_acc=pgd["robust_acc"], pgd_robust_acc_n_examples=pgd["n_examples"])
    if apgd is not None:
        values.update(apgd_ce_robust_acc=apgd["robust_acc"], apgd_ce_robust_acc_n_examples=apgd["n_examples"])
    # Clean accuracy from the evaluation at the run's eps on the most test images, whatever its attack;
    # training's own last evaluation counts too, with its image count (never the latest, if smaller).
    summary = row["summary"] if isinstance(row["summary"], dict) else {}
    flat = _flatten(summary)
    cleans = [(e["n_examples"], 1, e["id"], e["clean_acc"]) for e in evals if e["clean_acc"] is not None
              and (run_eps is None or abs(e["eps"] - run_eps) < _EPS_TOL)]
    train_n = _float(flat.get("eval_images")) or _float(flat.get("eval_subset"))
    if _float(flat.get("clean_acc")) is not None and train_n:
        cleans.append((int(train_n), 0, 0, _float(flat["clean_acc"])))
    if cleans:
        best_clean = max(cleans)
        values.update(clean_acc=best_clean[3], clean_acc_n_examples=best_clean[0])
    if evals:
        train_eval = _float(flat.get("eval_flops")) or 0.0
        eval_sum = [e["eval_flops"] for e in evals if e["eval_flops"] is not None]
        if eval_sum or train_eval:
            values["eval_flops"] = train_eval + sum(eval_sum)
    robust = values.get("aa_robust_acc", row["aa_robust_acc"])
    for fallback in ("apgd_ce_robust_acc", "pgd_robust_acc"):
        if robust is None:
            robust = values.get(fallback, row[fallback])
    if robust is not None:  # a run whose reported checkpoint the per-epoch check flagged stays collapsed
        flags = {**flat, "collapsed_epoch": row["collapsed_epoch"]}
        values["collapsed"] = bool(robust < COLLAPSE_THRESHOLD_ACC) or collapsed_at_selected(flags)
    if values:
        conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
