"""Closing an epoch: the per-epoch check, the collapse detector, checkpoint selection, the metrics row, the
last/best weights and the resumable state. :class:`EpochEnd` is a part of :class:`robustscale.train.loop.Trainer`."""
from __future__ import annotations

import dataclasses
import sys
import time

import torch

from .. import rundir
from ..compute import add_summaries, estimate_eval_flops, summarize_run_compute
from ..config import Method, OnCollapse, Select
from ..store import record_epoch
from .collapse import CollapseThresholds, detect_collapse, flagged_at
from .distributed import all_reduce_
from .evaluate import evaluate_subset
from .interrupts import StopRequested
from .ledger import close_segment, epoch_figures
from .state import Counters, collect_state, new_sums, rng_state, save_state
from .summary import append_metrics, epoch_line

__all__ = ["EpochEnd"]


class EpochEnd:
    """The Trainer's end of an epoch (and the figures its records share with the run's summary).

    Uses the parts :class:`robustscale.train.setup.RunSetup` built, and the Trainer's ``run_dir``, ``session``,
    ``layout``, ``interrupts``, ``trackers`` and ``_safe_point``."""

    def _state(self, counters: Counters, sums: dict, rng: dict) -> dict:
        return collect_state(self.cfg, self.dinfo, self.model, self.step, self.loader.sampler, counters, sums, rng)

    def _save_state(self, state: dict) -> None:
        if self.dinfo.main:
            save_state(self.run_dir, state)

    def _close_epoch(self, counters: Counters, sums: dict, tracker) -> None:
        """Evaluate, checkpoint and save the state after the last step of an epoch; stop if asked to."""
        device, epoch = self.dinfo.device, counters.epoch
        # Training of this epoch is done; an interrupt during eval resumes straight into eval.
        self._safe_point = (dataclasses.replace(counters), dict(sums), rng_state(device))
        self._end_epoch(counters, sums, tracker)
        counters.epoch, counters.step = epoch + 1, 0
        sums.clear()
        sums.update(new_sums())
        state = self._state(counters, sums, rng_state(device))
        self._save_state(state)
        self._safe_point = (dataclasses.replace(counters), dict(sums), state["rng"][self.dinfo.rank])
        stop = torch.tensor(float(self.interrupts.requested), device=device)
        if all_reduce_(stop, self.dinfo).item() and epoch + 1 < self.cfg.epochs:
            raise StopRequested(*self._safe_point)

    def _end_epoch(self, counters: Counters, sums: dict, tracker) -> None:
        """The per-epoch check, the metrics row, and the last/best checkpoints."""
        cfg = self.cfg
        clean = robust = None
        n_eval = 0
        t_eval = time.perf_counter()
        fgsm = None
        if self.x_eval is not None:
            ev = evaluate_subset(self._eval_model(), self.x_eval, self.y_eval, cfg, self.dinfo, self.autocast)
            clean, robust, fgsm, n_eval = ev.clean_acc, ev.pgd_robust_acc, ev.fgsm_robust_acc, ev.images
            counters.eval_flops += estimate_eval_flops(self.step_flops, n_eval,
                                                       cfg.eval_attack_steps if robust is not None else 0,
                                                       fgsm=fgsm is not None)
        eval_seconds = time.perf_counter() - t_eval
        # The epoch's work ends here: close its ledger segment, saved with the checkpoint that follows.
        close_segment(counters, tracker, self.session, layout=self.layout)
        self.last_clean, self.last_robust, self.last_n = clean, robust, n_eval
        # select: best keeps the epoch with the highest selection metric on the check's split (ties: the earlier).
        score = {"clean_acc": clean, "pgd_robust_acc": robust}[cfg.selection_metric]
        is_best = score is None or counters.best_robust_acc is None or score > counters.best_robust_acc
        if is_best:
            counters.best_robust_acc, counters.best_epoch = score, counters.epoch + 1
            counters.best_eval = {"clean_acc": clean, "pgd_robust_acc": robust, "n_examples": n_eval}
        selected = is_best and cfg.select is Select.BEST  # select: last writes no best.safetensors
        row = self._epoch_row(counters, sums, clean, robust, n_eval, eval_seconds, selected)
        row["fgsm_robust_acc"] = fgsm
        if self.dinfo.main:
            self._save_epoch(row, selected)
        self._check_collapse(counters, row)

    def _check_collapse(self, counters: Counters, row: dict) -> None:
        """Feed the epoch's PGD / FGSM accuracies to the detector; say so (one line) at the flagged epoch.

        Every rank decides alike: the accuracies are reduced over ranks before they get here.
        """
        if row["pgd_robust_acc"] is None:
            return
        entry = {k: row[k] for k in ("epoch", "pgd_robust_acc", "fgsm_robust_acc", "eval_images")}
        counters.eval_history = counters.eval_history + [entry]  # a new list: safe points keep the old one
        if counters.collapse is not None:
            return
        found = detect_collapse(counters.eval_history, CollapseThresholds(self.cfg.collapse_ratio,
                                                                          self.cfg.collapse_gap))
        if found is None:
            return
        counters.collapse = found.to_record()
        if self.dinfo.main:
            then = "stopping (on_collapse: stop)" if self.cfg.on_collapse is OnCollapse.STOP else \
                "training goes on (on_collapse: warn)"
            print(f"warning: {found.message()}; {then}", file=sys.stderr, flush=True)

    def _collapse_at_selected(self, counters: Counters, selected_epoch, monitored: bool) -> bool | None:
        """Is the reported checkpoint's epoch itself flagged? A run can recover after a flag, and selection can
        pick an epoch before it. None: not monitored; an epoch the check never saw counts as flagged."""
        if not monitored:
            return None
        if counters.collapse is None:
            return False
        at = flagged_at(counters.eval_history, selected_epoch,
                        CollapseThresholds(self.cfg.collapse_ratio, self.cfg.collapse_gap)) \
            if selected_epoch is not None else None
        return True if at is None else at

    def _epoch_row(self, counters: Counters, t: dict, clean, robust, n_eval: int, eval_seconds: float,
                   is_best: bool) -> dict:
        """The metrics.jsonl row of the epoch (``t``: sums, already totals over ranks)."""
        cfg, seconds = self.cfg, t["seconds"]
        return {
            "epoch": counters.epoch + 1,
            "train_loss": t["loss"] / max(t["n"], 1),
            "train_adv_acc": 100 * t["adv_correct"] / t["n"] if cfg.method is not Method.STANDARD and t["n"] else None,
            "train_clean_acc": 100 * t["clean_correct"] / t["clean_n"] if t["clean_n"] else None,
            "clean_acc": clean, "pgd_robust_acc": robust, "eval_images": n_eval, "eval_split": self.eval_split,
            "eval_attack": f"pgd{cfg.eval_attack_steps}-{cfg.norm.value}" if robust is not None else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "eps": self.task.eps if hasattr(self.task, "eps") else cfg.eps,
            "images_per_second": t["n"] / max(seconds, 1e-9),
            "epoch_seconds": seconds, "eval_seconds": eval_seconds,
            "train_images_seen": counters.images_seen,
            # Compute so far (cumulative: the ledger the checkpoint of this epoch holds), and this epoch's own.
            **self._compute(counters, counters.compute_pieces),
            "session": self.session, **epoch_figures(counters, counters.epoch + 1),
            "best": is_best,
        }

    def _save_epoch(self, row: dict, is_best: bool) -> None:
        """Rank 0: last (and best) weights, the metrics row, the store, the epoch line."""
        cfg = self.cfg
        weights = "ema" if self.task.has_ema() else "raw"
        meta = {"epoch": str(row["epoch"]), "weights": weights,
                "clean_acc": rundir.dumps(row["clean_acc"]), "pgd_robust_acc": rundir.dumps(row["pgd_robust_acc"])}
        rundir.save_weights(rundir.weights_path(self.run_dir, "last"), self._eval_model(), cfg, **meta)
        if is_best:
            rundir.save_weights(rundir.weights_path(self.run_dir, "best"), self._eval_model(), cfg, **meta)
        append_metrics(self.run_dir, row)
        record_epoch(cfg, row["epoch"], row)
        self.trackers.log_epoch(row, step=row["epoch"])
        if cfg.progress:
            print(epoch_line(cfg, row), file=sys.stderr, flush=True)

    def _compute(self, counters: Counters, pieces: list) -> dict:
        """FLOPs / time / energy / dollars of the run so far (``robustscale.compute.summarize_run_compute``)."""
        return summarize_run_compute(self.step_flops, counters.num_updates, self.cfg.batch_size, counters.eval_flops,
                                     add_summaries(*pieces), self.cost_model, device_type=self.cfg.device_type,
                                     images_seen=counters.images_seen)
