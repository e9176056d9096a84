"""The training loop: ``train(cfg)`` and the :class:`Trainer` it runs, a short loop over named steps.

The Trainer's setup (run folder, data, model, task, step) is :class:`robustscale.train.setup.RunSetup`; what
happens after the last step of an epoch (check, selection, checkpoints) is
:class:`robustscale.train.epoch_end.EpochEnd`."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from .. import __version__, rundir
from ..compute import ComputeTracker
from ..config import Method, OnCollapse, Select, TrainConfig
from ..errors import UserError, as_disk_error, check_free_space, check_writable_dir, disk_error
from ..models import count_parameters
from ..store import record_run_end, record_run_start, store_for
from ..store.hooks import StoreWarning, sync_hint
from ..store.sync import sync_run_dir
from ..trackers import open_trackers
from .distributed import Dist, all_reduce_, batch_plan, launch_rank, setup_distributed
from .epoch_end import EpochEnd
from .interrupts import Interrupts, StopRequested, TrainingDiverged
from .ledger import close_segment, next_session, sessions
from .setup import RunSetup, run_name
from .state import (Counters, check_resume, load_state, loader_from, new_sums, restore_state, rng_state,
                    run_micro_batch_size, seed_slot, set_rng_state)
from .step import eps_at
from .summary import (build_summary, collapse_fields, metrics_lines, selection_record, truncate_metrics,
                      write_config_and_env)

__all__ = ["train", "run_name", "Trainer"]


def train(cfg: TrainConfig | None, resume: str | Path | None = None) -> dict:
    """Train ``cfg`` (or continue the run in ``resume``); returns the summary (also in summary.json).

    Works in one process, under ``torchrun``, or in a Slurm step over several nodes (gloo on CPU, NCCL on
    GPU; each rank gets ``batch_size // world_size`` images per step, in micro-batches of
    ``micro_batch_size`` with gradient accumulation; only rank 0 writes). A resumed run may use another
    number of ranks than it was saved by: same global batch, same batches, its micro-batch kept.
    Raises:
        UserError: bad config / data / resume directory; TrainingDiverged (a UserError) on a NaN/inf loss.
        KeyboardInterrupt: after saving a resumable state (Ctrl-C).
    """
    if cfg is None and resume is None:
        raise UserError("nothing to train: give a config or a run directory to resume")
    resume_dir = Path(resume) if resume is not None else None
    if resume_dir is not None:
        cfg = check_resume(resume_dir, cfg)
        metrics_lines(resume_dir)  # a garbage line fails now, before anything is rewritten
        done = finished_summary(resume_dir, cfg)
        if done is not None:
            return done
    dinfo = setup_distributed(cfg)
    # Backend switches are process-global: restore them so that a library caller is left as it was.
    saved_flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                   torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    trainer = None
    try:
        trainer = Trainer(cfg, dinfo, resume_dir)
        summary = trainer.run()
        record_run_end(trainer.cfg, summary, run_dir=trainer.run_dir)  # a store outage only warns
        return summary
    except BaseException as exc:
        if trainer is not None and trainer.in_store:  # never leave a half row `running`
            if isinstance(exc, KeyboardInterrupt):
                record_run_end(trainer.cfg, status="interrupted", run_dir=trainer.run_dir,
                               error=f"interrupted; resume with: robustscale train --resume {trainer.run_dir}")
            else:
                record_run_end(trainer.cfg, status="failed", error=f"{type(exc).__name__}: {exc}",
                               run_dir=trainer.run_dir)
        if trainer is not None and trainer.trackers is not None:  # no-op when _finish already closed them
            trainer.trackers.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        disk = as_disk_error(exc, getattr(trainer, "run_dir", None) or cfg.output_dir)
        if disk is not None:  # a full / read-only disk mid-run: the last checkpoint is intact; say how to go on
            where = getattr(trainer, "run_dir", None)
            has_state = where is not None and (Path(where) / rundir.STATE).is_file()
            hint = f"resume with: robustscale train --resume {where}" if has_state else \
                "rerun the same command (no checkpoint was saved yet)"
            raise disk_error(disk, hint) from None
        raise
    finally:
        torch.use_deterministic_algorithms(saved_flags[0], warn_only=saved_flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved_flags[2:]
        if dinfo.owns_group:
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def finished_summary(run_dir: Path, cfg: TrainConfig) -> dict | None:
    """A completed run's summary when ``run_dir`` holds one for ``cfg``: resuming it is a no-op that says so.

    Never a reset: nothing is trained or rewritten. A store row that missed the end (an outage) is
    rebuilt from the folder on the way.
    """
    path = run_dir / rundir.SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if summary.get("status") != "completed" or summary.get("config_hash") != cfg.config_hash():
        return None
    if launch_rank() == 0:  # before the process group: torchrun's or a Slurm step's rank
        print(f"run {run_dir} is already complete ({summary.get('epochs_done')}/{cfg.epochs} epochs); "
              f"nothing to train", file=sys.stderr, flush=True)
        _resync_store(run_dir, cfg)
    return summary


def _resync_store(run_dir: Path, cfg: TrainConfig) -> None:
    """Make the store's row of a complete run say so (it may have missed the end); warn if it cannot."""
    try:
        store = store_for(cfg)
        row = store.get_run(cfg.name, details=False) if store is not None else None
        if store is not None and (row is None or row["status"] != "done"):
            sync_run_dir(store, run_dir)
    except Exception as exc:  # noqa: BLE001  (the run is complete in its folder either way)
        warnings.warn(f"results store: {cfg.name} not recorded ({str(exc).split('; ')[0]}); record it later with: "
                      f"{sync_hint(run_dir, None, cfg)}", StoreWarning, stacklevel=2)


class Trainer(RunSetup, EpochEnd):
    """One training run: set up from ``cfg``, then epochs of steps, per-epoch checks and checkpoints."""

    def __init__(self, cfg: TrainConfig, dinfo: Dist, resume_dir: Path | None):
        self.cfg, self.dinfo, self.resume_dir = cfg, dinfo, resume_dir
        # (counters, sums, rng) of the last consistent point, saved if a raw Ctrl-C interrupts a step.
        self._safe_point = None
        self.last_clean = self.last_robust = self.last_n = None
        self.in_store = False
        self.trackers = None  # experiment trackers (cfg.log_to), opened once the run folder exists

    # ------------------------------------------------------------------ main
    def run(self) -> dict:
        self.run_dir = self._prepare_run_dir()
        # Everything the user can get wrong (an unwritable folder, config, data) fails here, before
        # the store gets a row or the folder a file.
        if self.dinfo.main:
            check_writable_dir(self.run_dir, "--output-dir", "choose a writable --output-dir", create=False)
        state = load_state(self.run_dir, self.cfg) if self.resume_dir is not None else None
        self.plan = batch_plan(self.cfg.batch_size, self.dinfo.world, run_micro_batch_size(self.cfg, state))
        self.layout = {"world_size": self.dinfo.world, "nodes": self.dinfo.nodes,
                       "micro_batch_size": self.plan.micro_batch_size, "accumulation_steps": self.plan.accumulation}
        self._setup()
        if self.dinfo.main:  # a disk that cannot hold the checkpoints fails now, not after an epoch
            check_free_space(self.run_dir, rundir.checkpoint_bytes(self.run_dir, self.model, self.optimizer),
                             "the checkpoints", "free space or choose another --output-dir")
        if state is not None:
            counters, sums, rng = restore_state(state, self.dinfo, self.model, self.step)
            del state
            if rng is not None:
                set_rng_state(rng, self.dinfo.device)
        else:
            counters, sums = Counters(), new_sums()
        counters.micro_batch_size = self.plan.micro_batch_size
        self.session = next_session(counters)
        # Before the store row and the run's files: a required tracker that cannot start leaves nothing behind.
        self.trackers = open_trackers(self.cfg.log_to, self.cfg.to_dict(), self.cfg.name, self.run_dir,
                                      required=self.cfg.log_to_required, rank=self.dinfo.rank)
        record_run_start(self.cfg, self.run_dir, resumed=self.resume_dir is not None)
        self.in_store = True
        if self.dinfo.main:
            write_config_and_env(self.run_dir, self.cfg, self.dinfo)
            truncate_metrics(self.run_dir, counters.epoch)
        tracker = ComputeTracker(self.cfg, device=self.dinfo.device)
        with Interrupts() as interrupts:
            self.interrupts = interrupts
            try:
                with tracker:
                    self._loop(counters, sums, tracker)
            except StopRequested as stop:
                self._save_interrupted(*stop.args, tracker)
                if self.dinfo.main:
                    print(f"interrupted at epoch {stop.args[0].epoch + 1} step {stop.args[0].step}; resume with: "
                          f"robustscale train --resume {self.run_dir}", file=sys.stderr)
                raise KeyboardInterrupt from None
            except KeyboardInterrupt:
                self._on_hard_interrupt(counters, tracker)
                raise
            except TrainingDiverged as exc:
                self._finish(counters, "diverged", counters.compute_pieces + [{**tracker.summary(), **self.layout}],
                             error=str(exc))
                raise
        # The totals are the ledger of the last checkpoint: what a resume from it would also report.
        return self._finish(counters, "completed", counters.compute_pieces)

    def _save_interrupted(self, counters: Counters, sums: dict, rng: dict, tracker) -> None:
        """Save the resumable state of (counters, sums, rng), with its ledger, and an ``interrupted`` summary."""
        close_segment(counters, tracker, self.session, restart=False, layout=self.layout)  # the block has exited
        self._save_state(self._state(counters, sums, rng))
        self._finish(counters, "interrupted", counters.compute_pieces)

    def _on_hard_interrupt(self, counters: Counters, tracker) -> None:
        """A KeyboardInterrupt raised mid-step (second Ctrl-C): save unless the weights were being updated."""
        saved = self._safe_point is not None and self.dinfo.world == 1
        if saved:
            counters = self._safe_point[0]
            self._save_interrupted(*self._safe_point, tracker)
        if self.dinfo.main:
            where = f"resume with: robustscale train --resume {self.run_dir}" if saved else \
                "kept the checkpoint of the last finished epoch"
            print(f"interrupted at epoch {counters.epoch + 1}; {where}", file=sys.stderr)

    # ------------------------------------------------------------------ epochs and steps
    def _loop(self, counters: Counters, sums: dict, tracker) -> None:
        self._safe_point = None
        for epoch in range(counters.epoch, self.cfg.epochs):
            if self._stopped_by_collapse(counters):
                break
            counters.epoch = epoch
            self._train_epoch(counters, sums)
            self._close_epoch(counters, sums, tracker)

    def _stopped_by_collapse(self, counters: Counters) -> bool:
        """``on_collapse: stop`` and the run was flagged: no more epochs (a resume does not restart it)."""
        return counters.collapse is not None and self.cfg.on_collapse is OnCollapse.STOP

    def _train_epoch(self, counters: Counters, sums: dict) -> None:
        """The steps of epoch ``counters.epoch`` from step ``counters.step`` on; ``sums`` accumulates."""
        cfg, device = self.cfg, self.dinfo.device
        self.loader.sampler.set_epoch(counters.epoch)
        accumulation = self.plan.accumulation
        batches = iter(loader_from(self.loader, counters.step * accumulation))
        self.task.train()
        bar = tqdm(total=self.steps_per_epoch, initial=counters.step, desc=f"epoch {counters.epoch + 1}/{cfg.epochs}",
                   unit="batch", disable=not (self.dinfo.main and cfg.progress), dynamic_ncols=True, leave=False,
                   file=sys.stderr)
        t_epoch = time.perf_counter()
        window = [t_epoch, 0]  # start time and images of the img/s window

        def sums_now() -> dict:
            return dict(sums, seconds=sums["seconds"] + time.perf_counter() - t_epoch)

        try:
            while counters.step < self.steps_per_epoch:
                # What a resume from here needs, captured before this step touches any RNG.
                self._safe_point = (dataclasses.replace(counters), sums_now(), rng_state(device))
                micro = [b for _, b in zip(range(accumulation), batches)]
                if len(micro) < accumulation:
                    break
                n, stop = self._train_step(counters, sums, micro)
                window[1] += n
                bar.update(1)
                if counters.step % cfg.log_every == 0 or counters.step == self.steps_per_epoch:
                    bar.set_postfix(self._postfix(sums, window), refresh=False)
                if stop and counters.step < self.steps_per_epoch:
                    # Ctrl-C (on some rank): stop between steps, where the state is exactly resumable.
                    raise StopRequested(dataclasses.replace(counters), sums_now(), rng_state(device))
        finally:
            bar.close()
        sums["seconds"] += time.perf_counter() - t_epoch

    def _train_step(self, counters: Counters, sums: dict, micro: list) -> tuple[int, bool]:
        """One optimizer update on this rank's micro-batches ``[(x, y), ...]``; returns (images over all ranks,
        whether some rank asked to stop)."""
        cfg, dinfo, sampler = self.cfg, self.dinfo, self.loader.sampler
        if cfg.method is not Method.STANDARD:
            self.task.set_eps(eps_at(cfg, counters.epoch, counters.step, self.steps_per_epoch))
        local = torch.zeros(3, dtype=torch.float64, device=dinfo.device)  # loss (mean over passes), adv, clean
        targets: list = []
        has_clean = []

        def batch(k: int):
            def make():
                # The slot's own randomness (mixup, attack start, dropout): the same on any number of ranks.
                seed_slot(cfg.seed, counters.epoch, sampler.slot(counters.step, k))
                x, y = (t.to(dinfo.device, non_blocking=True) for t in micro[k])
                if self.mixup is not None:
                    x, y = self.mixup(x, y)
                targets.append(y.argmax(1) if y.dim() == 2 else y)
                return x, y
            return make

        def seen(k: int, out: dict) -> None:
            local.add_(self._micro_counts(out, targets[k], len(micro)))
            has_clean.append(out.get("clean_output") is not None)
            targets[k] = None

        reduced = {}

        def check() -> None:
            reduced.update(self._reduce_step(local, counters))
            self._safe_point = None  # weights are changing: not a consistent state until the step ends

        no_sync = getattr(self.task.trainable_module, "no_sync", None) if len(micro) > 1 else None
        self.step.accumulate([batch(k) for k in range(len(micro))], counters.num_updates + 1, on_output=seen,
                             before_update=check, no_sync=no_sync, running_stats=self.running_stats)
        reduced["has_clean"] = all(has_clean)
        counters.num_updates += 1
        n = self.plan.batch_size  # all ranks, all passes
        sums["adv_correct"] += reduced["adv"]
        sums["clean_correct"] += reduced["clean"]
        if reduced["has_clean"]:
            sums["clean_n"] += n
        sums["loss"] += reduced["loss"] * n
        sums["n"] += n
        counters.step += 1
        counters.images_seen += n
        return n, bool(reduced["stop"])

    @staticmethod
    def _micro_counts(out: dict, target, passes: int):
        """(loss / passes, adversarial correct, clean correct) of one micro-batch, float64."""
        zero = torch.zeros((), dtype=torch.float64, device=target.device)
        clean = out.get("clean_output")
        adv_correct = (out["output"].detach().argmax(1) == target).sum() if out.get("x_adv") is not None else zero
        clean_correct = (clean.detach().argmax(1) == target).sum() if clean is not None else zero
        return torch.stack([out["loss"].detach().double() / passes, adv_correct.double(), clean_correct.double()])

    def _reduce_step(self, local, counters: Counters) -> dict:
        """Loss and accuracies of the step summed over ranks, with the Ctrl-C flag; raises on a NaN loss.

        ``local``: this rank's (mean loss, adversarial correct, clean correct). One sync per step, so that
        all ranks agree on the bar, the NaN check and where to stop.
        """
        dinfo = self.dinfo
        stop = 1.0 if self.interrupts.requested else 0.0
        flags = torch.cat([local, torch.tensor([stop], dtype=torch.float64, device=local.device)])
        loss_sum, adv_sum, clean_sum, stop_sum = all_reduce_(flags, dinfo).tolist()
        loss = loss_sum / dinfo.world
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} at epoch {counters.epoch + 1} step {counters.step + 1} "
                f"(lr {self.optimizer.param_groups[0]['lr']:.3g}); lower lr/lr_base or set clip_grad; "
                f"the last good checkpoint is kept in {self.run_dir}")
        return {"loss": loss, "adv": adv_sum, "clean": clean_sum, "stop": stop_sum}

    def _postfix(self, sums: dict, window: list) -> dict:
        """The progress bar's figures; restarts the img/s window."""
        now = time.perf_counter()
        post = {"img/s": f"{window[1] / max(now - window[0], 1e-9):.0f}",
                "loss": f"{sums['loss'] / max(sums['n'], 1):.3f}"}
        if self.cfg.method is not Method.STANDARD:
            post["adv_acc"] = f"{100 * sums['adv_correct'] / max(sums['n'], 1):.1f}"
        if sums["clean_n"]:
            post["clean_acc"] = f"{100 * sums['clean_correct'] / sums['clean_n']:.1f}"
        window[:] = [now, 0]
        return post

    # ------------------------------------------------------------------ records
    def _finish(self, counters: Counters, status: str, pieces: list, error: str | None = None) -> dict:
        """The run's summary (written to summary.json by rank 0)."""
        cfg = self.cfg
        compute = self._compute(counters, pieces)
        details = {
            "epochs_done": counters.epoch, "optimizer_steps": counters.num_updates,
            "best_epoch": counters.best_epoch, "best_pgd_robust_acc": counters.best_robust_acc,
            "attack_flops_fraction": compute["attack_flops_fraction"], "device_type": compute["device_type"],
            "electricity_basis": compute["electricity_basis"], "step_flops": self.step_flops.to_dict(),
            "eval_subset": cfg.eval_subset, "eval_attack_steps": cfg.eval_attack_steps,
            **collapse_fields(cfg, counters.collapse, monitored=self.x_eval is not None and cfg.eval_attack_steps > 0
                              and cfg.eps > 0),
            "stopped_by_collapse": self._stopped_by_collapse(counters) and counters.epoch < cfg.epochs,
            "ema": cfg.ema_decay is not None, "compiled": self.compiled, **self.layout,
            "run_dir": str(self.run_dir), "eval_images": len(self.x_eval) if self.x_eval is not None else 0,
            "compute_sessions": sessions(dataclasses.replace(counters, compute_pieces=pieces)),
            "robustscale_version": __version__, "error": error,
        }
        last = {"clean_acc": self.last_clean, "pgd_robust_acc": self.last_robust, "n_examples": self.last_n}
        details.update(selection_record(cfg, self.eval_split, counters,
                                        counters.best_eval if cfg.select is Select.BEST else last))
        details["collapse_at_selected"] = self._collapse_at_selected(counters, details["selected_epoch"],
                                                                     details["collapse_monitored"])
        # The run record's accuracies are test accuracies: from the per-epoch check only when it ran on test
        # images (select_split: test); otherwise the evaluations after training fill them in.
        on_test = self.eval_split == "test"
        summary = build_summary(cfg, status=status, model_parameters=count_parameters(rundir.inner_model(self.model)),
                                train_images=self.train_images, counters=counters, compute=compute,
                                clean_acc=self.last_clean if on_test else None,
                                pgd_robust_acc=self.last_robust if on_test else None,
                                n_examples=self.last_n if on_test else None, details=details)
        if self.dinfo.main:
            rundir.write_json(self.run_dir / rundir.SUMMARY, summary)
        if self.trackers is not None:  # the summary (every compute field) and the run's claims, then close
            self.trackers.log_summary(summary, rundir.read_claims(self.run_dir))
            self.trackers.finish(status)
        return summary
