"""The local executor: submitit's ``LocalExecutor``, with the sweep owning its children.

- **Signals.** Jobs are submitted with SIGINT blocked, so submitit's controller and the training
  process inherit a mask that keeps a terminal Ctrl-C from reaching them (the controller would
  print a ``KeyboardInterrupt`` traceback and SIGKILL its task after one second). The sweep
  process alone catches SIGINT / SIGTERM and stops its jobs with SIGTERM, which the controller
  forwards and :class:`~robustscale.sweep.job.RunJob` turns into training's graceful stop
  (finish the step, save a resumable state, record the run ``interrupted``). A second Ctrl-C
  kills them at once.
- **Orphans.** A sweep killed with SIGKILL leaves its jobs running (submitit's controllers
  outlive their parent). The next ``sweep run`` finds them from the store (``executor=local``,
  this host, a live controller or training process: ``job_id`` and ``pid`` carry the process
  start time, so a reused pid is not mistaken for them), adopts them: they count against
  ``max_parallel`` and the sweep waits for them as for its own jobs; Ctrl-C stops them too.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import submitit
import torch

from ..errors import UserError
from ..store.liveness import process_alive, process_start
from .spec import ExecutorOptions


# ---------------------------------------------------------------------- processes
def _pid_and_start(text: str | None) -> tuple[int, str | None] | None:
    """``"1234@5678"`` (pid @ start time) or ``"1234"`` -> ``(1234, "5678")``."""
    pid, _, start = str(text or "").partition("@")
    return (int(pid), start or None) if pid.isdigit() else None


def local_job_id(controller_pid: int) -> str:
    """``controller@start:driver@start``: the job's submitit controller and the sweep process that owns it."""
    me = os.getpid()
    return f"{controller_pid}@{process_start(controller_pid)}:{me}@{process_start(me)}"


def parse_local_job_id(job_id: str | None):
    """``(controller, driver)`` of a local job id, each ``(pid, start)`` or None."""
    controller, _, driver = str(job_id or "").partition(":")
    return _pid_and_start(controller), _pid_and_start(driver)


def _alive(proc: tuple[int, str | None] | None) -> bool:
    return proc is not None and process_alive(proc[0], proc[1])


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_tree(pid: int) -> None:
    for child in _children(pid):
        _kill_tree(child)
    _signal(pid, signal.SIGKILL)


def _gpus_of(pid: int) -> list[int]:
    """The GPUs a running controller was given (its CUDA_VISIBLE_DEVICES), when readable."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []
    for item in env:
        if item.startswith(b"CUDA_VISIBLE_DEVICES="):
            return [int(g) for g in item.split(b"=", 1)[1].decode().split(",") if g.strip().isdigit()]
    return []


@dataclass
class Orphan:
    """A job of an earlier ``sweep run`` on this host that is still alive."""

    name: str
    controller: tuple[int, str | None] | None  # submitit's controller (the row's job_id)
    trainer: tuple[int, str | None] | None  # the training process (the row's pid)
    gpus: list[int] = field(default_factory=list)

    def alive(self) -> bool:
        return _alive(self.controller) or _alive(self.trainer)

    def stop(self) -> None:
        """Graceful stop: SIGTERM to the controller (forwarded to its task), else to the trainer."""
        if _alive(self.controller):
            _signal(self.controller[0], signal.SIGTERM)
        elif _alive(self.trainer):
            _signal(self.trainer[0], signal.SIGTERM)

    def kill(self) -> None:
        for proc in (self.controller, self.trainer):
            if _alive(proc):
                _kill_tree(proc[0])


def find_orphans(states) -> list[Orphan]:
    """Runs of ``states`` (``sweep_states``) alive in a local job this process did not start."""
    host = socket.gethostname()
    out = []
    for s in states:
        row = s.row or {}
        if row.get("executor") != "local" or s.state not in ("running", "queued"):
            continue
        if row.get("host") not in (None, host):  # its pids are another machine's
            continue
        controller, driver = parse_local_job_id(row.get("job_id"))
        if _alive(driver):
            continue  # its sweep process is alive: that sweep owns it
        trainer = (int(row["pid"]), row.get("process_start")) \
            if s.state == "running" and row.get("host") == host and row.get("pid") else None
        orphan = Orphan(s.run.name, controller if _alive(controller) else None, trainer if _alive(trainer) else None)
        if orphan.alive():
            orphan.gpus = _gpus_of(orphan.controller[0]) if orphan.controller else []
            out.append(orphan)
    return out


# ---------------------------------------------------------------------- outcomes
def job_outcome(sjob) -> tuple[str, str]:
    """``(done | interrupted | failed, info)`` of a finished submitit job."""
    try:
        results = sjob.results()
    except Exception:  # noqa: BLE001
        return "failed", job_error(sjob)
    result = results[0] if results else None
    status = (result or {}).get("status", "done") if isinstance(result, dict) else "done"
    if status == "done":
        return "done", ""
    return ("interrupted" if status == "interrupted" else "failed"), str((result or {}).get("error") or status)


def job_error(sjob) -> str:
    """The last line of a failed submitit job's error, and where its log is."""
    try:
        sjob.results()  # all tasks (DDP ranks) of the job
        return "no result"
    except Exception as exc:  # noqa: BLE001
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        tail = next((ln.strip() for ln in reversed(lines) if not ln.startswith(" ") and ":" in ln), None)
        tail = tail or (lines[-1].strip() if lines else type(exc).__name__)
        try:
            log = sjob.paths.stderr
        except Exception:  # noqa: BLE001
            log = None
        return f"{tail}{f' (log: {log})' if log else ''}"


# ---------------------------------------------------------------------- the runner
class LocalRunner:
    """submitit.LocalExecutor with a cap on concurrent jobs (adopted orphans included) and GPUs per job."""

    def __init__(self, folder: Path, opts: ExecutorOptions, orphans: list[Orphan] | None = None,
                 log: Callable[[str], None] = print, slots=None):
        self.opts, self.log = opts, log
        self.orphans = list(orphans or [])
        self.executor = submitit.LocalExecutor(folder=str(folder), max_num_timeout=opts.max_requeues)
        self.gpus = visible_gpus()
        per_job = opts.gpus_per_job
        if per_job is None:
            per_job = max(1, len(self.gpus) // max(opts.max_parallel, 1)) if self.gpus else 0
        if per_job > len(self.gpus):
            raise UserError(f"gpus_per_job {per_job} but only {len(self.gpus)} GPU(s) visible here")
        self.per_job = per_job
        self.executor.update_parameters(timeout_min=opts.timeout_min, signal_delay_s=min(opts.signal_delay_s, 60))
        self.active: dict[Any, tuple[Any, list[int]]] = {}
        # Shared with other sweeps of the store (runner.SweepSlots): claim(job) -> "go" / "full" / "busy" /
        # ("skip", why), started(job, controller_pid), release(job), tick(), close().
        self.slots = slots

    def run(self, jobs, *, on_submit, on_done, on_adopted_done, wait: bool, poll_s: float) -> None:
        pending = deque(jobs)
        taken = {g for o in self.orphans for g in o.gpus}
        free = [g for g in self.gpus if g not in taken]
        try:
            while pending or self.active or self.orphans:
                for orphan in [o for o in self.orphans if not o.alive()]:
                    self.orphans.remove(orphan)
                    free.extend(g for g in orphan.gpus if g in self.gpus)
                    on_adopted_done(orphan.name)
                busy = 0  # runs another sweep holds: tried again on the next poll
                while (pending and busy < len(pending) and len(self.active) + len(self.orphans) < self.opts.max_parallel
                       and len(free) >= self.per_job):
                    job = pending.popleft()
                    verdict = self.slots.claim(job) if self.slots is not None else "go"
                    if verdict == "full":
                        pending.appendleft(job)
                        break
                    if verdict == "busy":
                        pending.append(job)
                        busy += 1
                        continue
                    if verdict != "go":
                        on_done(job, "skipped", verdict[1])
                        continue
                    mine, free = free[:self.per_job], free[self.per_job:]
                    try:
                        sjob = self._submit(job, mine)
                    except BaseException:
                        if self.slots is not None:
                            self.slots.release(job)
                        raise
                    self.active[sjob] = (job, mine)
                    if self.slots is not None and str(sjob.job_id).isdigit():
                        self.slots.started(job, int(sjob.job_id), process_start(int(sjob.job_id)))
                    on_submit(job, local_job_id(int(sjob.job_id)) if str(sjob.job_id).isdigit() else str(sjob.job_id))
                for sjob in [j for j in self.active if j.done()]:
                    job, mine = self.active.pop(sjob)
                    free.extend(mine)
                    outcome = job_outcome(sjob)
                    if self.slots is not None:
                        self.slots.release(job)  # the job's rows are final: the next sweep to take it sees them
                    on_done(job, *outcome)
                if self.slots is not None:
                    self.slots.tick()
                if pending or self.active or self.orphans:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            self.stop_all()
            raise
        finally:
            if self.slots is not None:
                self.slots.close()

    def _submit(self, job, gpus: list[int]):
        """Submit with SIGINT blocked: the controller and its task inherit the mask (see the module docstring)."""
        self.executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus,
                                        tasks_per_node=self.opts.tasks_per_job or max(len(gpus), 1))
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return self.executor.submit(job)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def stopped(self) -> list[str]:
        """After an interrupt: the runs whose jobs were running (and are stopped now)."""
        return [job.name for job, _ in self.active.values()] + [o.name for o in self.orphans]

    def stop_all(self) -> None:
        """SIGTERM every job (each saves a resumable state); SIGKILL what is left after the grace period."""
        own = [int(sjob.job_id) for sjob in self.active if str(sjob.job_id).isdigit()]
        if not own and not self.orphans:
            return
        self.log(f"interrupt: stopping {len(own) + len(self.orphans)} running job(s); each saves a resumable "
                 f"checkpoint (Ctrl-C again to kill them at once)")
        for pid in own:
            _signal(pid, signal.SIGTERM)
        for orphan in self.orphans:
            orphan.stop()
        grace = max(30, min(self.opts.signal_delay_s, 300))
        deadline = time.time() + grace
        try:
            while time.time() < deadline and (any(not j.done() for j in self.active)
                                              or any(o.alive() for o in self.orphans)):
                time.sleep(0.2)
        except KeyboardInterrupt:
            self.log("second interrupt: killing the jobs now")
        for sjob in self.active:
            if not sjob.done() and str(sjob.job_id).isdigit():
                _kill_tree(int(sjob.job_id))
        for orphan in self.orphans:
            orphan.kill()


def visible_gpus() -> list[int]:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    try:
        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001
        return []
