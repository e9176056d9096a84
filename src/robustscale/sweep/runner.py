"""Run a sweep: find what is not done (by config hash), submit it, wait, record.

Executors (all submit the same :class:`~robustscale.sweep.job.RunJob`):

- ``local``: submitit's ``LocalExecutor`` (one subprocess per run, the same checkpoint /
  requeue code path as on Slurm), at most ``max_parallel`` at once, counting jobs of an earlier
  ``sweep run`` that was killed and left them running (adopted: see ``sweep/local.py``);
  visible GPUs are split between the running jobs. SIGINT / SIGTERM stop every job with a
  resumable checkpoint and mark it ``interrupted``.
- ``slurm``: submitit's Slurm executor, one job per run, submitted as one job array whose
  ``%`` limit is ``array_parallelism``; partition, nodes, GPUs and tasks per node, CPUs, memory,
  time limit and extra ``#SBATCH`` options from the spec's ``executor:`` section or the command
  line (:func:`slurm_parameters`). A run on several nodes is one process group: submitit starts
  one task per GPU on every node and each task joins as a rank (rendezvous on the first node).
  Jobs run the driver's Python (``sys.executable``), so the project's virtualenv.
- ``inline``: in this process, one after the other (debugging).

A run is skipped when a run with its config hash is ``done`` (and has the spec's evaluation),
or is alive elsewhere (running with a live process / fresh heartbeat, or queued in a live job).
Everything else (never started, failed, interrupted, stale, queued in a dead job) is submitted;
a run with a checkpoint resumes from it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import submitit
from tqdm import tqdm

from ..errors import UserError
from ..store import open_store, store_url_for
from ..store.liveness import process_alive
from .job import RunJob
from .local import LocalRunner, find_orphans, job_outcome, parse_local_job_id
from .spec import ExecutorOptions, PlannedRun, SweepSpec

EXECUTORS = ("local", "slurm", "inline")
TODO_STATES = ("pending", "needs_eval", "failed", "interrupted", "stale", "queued")
SLURM_ALIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT")


@dataclass
class RunState:
    run: PlannedRun
    state: str  # pending / queued / running / stale / failed / done / needs_eval
    row: dict[str, Any] | None  # the store row this state comes from
    note: str = ""


# ---------------------------------------------------------------------- store side
def open_sweep_store(spec: SweepSpec, store: str | None = None, create: bool = True, readonly: bool = False):
    return open_store(store or spec.store, output_dir=spec.output_dir, create=create, readonly=readonly)


def check_collisions(spec: SweepSpec, store) -> None:
    """UserError if a run name of the spec is in the store with another config or from an import."""
    rows = {r["name"]: r for r in store.list_runs(names=[r.name for r in spec.runs])}
    for run in spec.runs:
        row = rows.get(run.name)
        if row is None:
            continue
        if row["source"] != "robustscale":
            raise UserError(f"run name collision: {run.name!r} is an imported run (source {row['source']}) in "
                            f"{store.display_url}; change name_template or the store")
        if not run.cfg.matches_hash(row["config_hash"]):
            raise UserError(f"run name collision: {run.name!r} is in {store.display_url} with a different config "
                            f"(hash {row['config_hash']}, spec {run.config_hash}); change name_template, "
                            f"output_dir or the store")


def sweep_states(spec: SweepSpec, store) -> list[RunState]:
    """Where every run of the spec stands in the store."""
    evaluation = spec.evaluation
    aliases = _hash_aliases(spec)
    rows = store.list_runs(config_hashes=list(aliases))
    by_hash: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_hash.setdefault(aliases[row["config_hash"]], []).append(row)
    names = [r["name"] for r in rows if r["effective_status"] == "done"]
    evals = store.evaluations_of(names) if evaluation is not None and names else {}
    out = []
    for run in spec.runs:
        cands = by_hash.get(run.config_hash, [])
        same = [r for r in cands if r["name"] == run.name]
        done = [r for r in cands if r["effective_status"] == "done"]
        row = (same or done or cands or [None])[0]
        if done and (not same or same[0]["effective_status"] == "done"):
            row = same[0] if same else done[0]
        if row is None:
            out.append(RunState(run, "pending", None))
            continue
        status = row["effective_status"]
        note = "" if row["name"] == run.name else f"as {row['name']}"
        if status == "done":
            if evaluation is not None and not _has_evaluation(evals.get(row["name"], []), evaluation, run):
                out.append(RunState(run, "needs_eval", row, note))
            else:
                out.append(RunState(run, "done", row, note))
        elif status == "queued" and _job_alive(row):
            out.append(RunState(run, "queued", row, f"in job {row['job_id']}"))
        elif status == "queued":
            out.append(RunState(run, "queued", row, "job gone"))
        else:
            out.append(RunState(run, status, row, note))
    return out


def _hash_aliases(spec: SweepSpec) -> dict[str, str]:
    """Every hash a stored run of the spec may carry (today's, and 0.1.0's for runs it recorded) ->
    the planned run's hash, so that runs finished before an upgrade stay done."""
    return {h: run.config_hash for run in spec.runs for h in run.cfg.known_hashes()}


def _has_evaluation(evals: list[dict[str, Any]], evaluation, run: PlannedRun) -> bool:
    eps = evaluation.eps if evaluation.eps is not None else run.cfg.eps
    clean = evaluation.attack == "clean"  # recorded at eps 0 with a clean accuracy only
    for e in evals:
        if (e["attack"] == evaluation.attack and (clean or abs(e["eps"] - eps) < 1e-6)
                and e["clean_acc" if clean else "robust_acc"] is not None
                and (evaluation.n_examples is None or e["n_examples"] == evaluation.n_examples)):
            return True
    return False


def _job_alive(row: dict[str, Any]) -> bool:
    """Is the executor job a queued run was handed to still pending or running?"""
    job_id, executor = row.get("job_id"), row.get("executor")
    if not job_id:
        return False
    if executor == "local":  # "<controller pid>@<its start time>:...": a reused pid does not match
        controller, _ = parse_local_job_id(job_id)
        return controller is not None and process_alive(*controller)
    if executor == "slurm":
        if shutil.which("squeue") is None:
            return True  # cannot tell from here: assume the cluster still has it
        try:
            out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                                 timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return True
        return any(s.strip() in SLURM_ALIVE for s in out.splitlines())
    return False


def _alive_now(state: RunState) -> bool:
    return state.state == "running" or (state.state == "queued" and state.note.startswith("in job"))


# ---------------------------------------------------------------------- run
def run_sweep(spec: SweepSpec, *, executor: str = "local", store: str | None = None, max_parallel: int | None = None,
              options: ExecutorOptions | None = None, wait: bool = True, log: Callable[[str], None] = print,
              progress: bool = True, poll_s: float = 1.0) -> dict[str, Any]:
    """Submit what is not done and (by default) wait for it. Returns counts and per-run outcomes."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    opts = options or spec.executor
    if max_parallel is not None:
        if max_parallel < 1:
            raise UserError(f"invalid --max-parallel {max_parallel}: must be >= 1")
        opts = replace(opts, max_parallel=max_parallel)
    if opts.nodes != 1 and executor != "slurm":
        raise UserError(f"executor.nodes {opts.nodes} needs --executor slurm (the {executor} executor runs each "
                        f"run on this machine)")
    if executor == "slurm":
        slurm_parameters(opts, spec.name)  # bad node / GPU / task counts fail before anything is recorded
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise UserError("--executor slurm needs Slurm's sbatch on PATH (not found); use --executor local here")
    st = open_sweep_store(spec, store)
    check_collisions(spec, st)
    states = sweep_states(spec, st)
    orphans = []
    if executor == "local":
        orphans = find_orphans(states)
    todo = [s for s in states if s.state in TODO_STATES and not _alive_now(s)]
    _check_inputs([s.run for s in todo])
    counts = {"total": len(states), "done_before": sum(s.state == "done" for s in states),
              "alive_elsewhere": sum(_alive_now(s) for s in states) - len(orphans), "adopted": len(orphans),
              "submitted": len(todo)}
    adopted = f", {len(orphans)} left running by an earlier sweep run (adopted)" if orphans else ""
    log(f"sweep {spec.name}: {len(states)} runs, {counts['done_before']} done, "
        f"{counts['alive_elsewhere']} running elsewhere{adopted}, {len(todo)} to run ({executor}); "
        f"store {st.display_url}")
    outcomes: dict[str, str] = {}
    if not todo and not orphans:
        return {**counts, "outcomes": outcomes, "failed": 0, "interrupted": 0}

    url = store_url_for(None, st.url)
    threads = None
    if executor == "local":
        threads = opts.cpus_per_task or max(1, (os.cpu_count() or 1) // max(opts.max_parallel, 1))
    jobs = []
    for s in todo:
        run_dir = s.run.run_dir
        if s.state != "needs_eval":
            st.start_run(s.run.cfg, run_dir, status="queued", sweep=spec.name)
        evaluation = spec.evaluation.kwargs() if spec.evaluation is not None else None
        jobs.append(RunJob(s.run.cfg.to_dict(), url, evaluation, spec.name, threads))

    # One folder per invocation: job ids (local pids, a restarted Slurm's ids) repeat, old results must not match.
    folder = Path(spec.output_dir) / ".submitit" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    if executor == "inline":
        runner = _InlineRunner()
    elif executor == "local":
        runner = LocalRunner(folder, opts, orphans, log=log, slots=SweepSlots(st, spec, opts.max_parallel))
    else:
        held = sorted({s.row["job_id"] for s in states if _alive_now(s) and s.row and s.row.get("executor") == "slurm"
                       and s.row.get("job_id")})
        share = slurm_share(opts.array_parallelism, held)
        if held:
            log(f"{len(held)} job(s) of other submissions of this sweep are alive: " + share.describe())
        runner = _SlurmRunner(folder, opts, spec.name, share)

    bar = _bar(len(jobs) + len(orphans), progress)

    def on_submit(job, job_id: str | None) -> None:
        st.set_job(job.name, executor, job_id)

    def finished(name: str, outcome: str, info: str) -> None:
        outcomes[name] = outcome
        if outcome not in ("done", "skipped"):  # skipped: another sweep did it or is doing it
            _end_if_running(st, name, outcome, info)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"last: {name} {outcome}")
        log(f"{outcome.upper() if outcome == 'failed' else outcome:<11} {name}{': ' + info if info else ''}")

    def on_adopted_done(name: str) -> None:
        row = st.get_run(name, details=False) or {}
        status = row.get("status")
        outcome = status if status in ("done", "interrupted") else "failed"
        finished(name, outcome, "" if outcome == "done" else (row.get("error") or "its job ended without recording"))

    try:
        with _sigterm_interrupts():
            runner.run(jobs, on_submit=on_submit, on_done=lambda job, outcome, info: finished(job.name, outcome, info),
                       on_adopted_done=on_adopted_done, wait=wait, poll_s=poll_s)
    except KeyboardInterrupt:
        stopped = [n for n in getattr(runner, "stopped", lambda: [])() if n not in outcomes]
        for name in stopped:
            _end_if_running(st, name, "interrupted", "interrupted (SIGINT/SIGTERM to the sweep)")
        log(f"interrupted: {len(stopped)} run(s) stopped and marked interrupted; `robustscale sweep run "
            f"{spec.path or spec.name}` resumes them from their checkpoints")
        raise
    finally:
        if bar is not None:
            bar.close()
    failed = sum(v == "failed" for v in outcomes.values())
    interrupted = sum(v == "interrupted" for v in outcomes.values())
    return {**counts, "outcomes": outcomes, "failed": failed, "interrupted": interrupted}


class SweepSlots:
    """The spec's ``max_parallel`` as slots in the store, shared by every ``sweep run`` of it (local executor).

    Before a job starts, a slot is taken for its run (``busy`` when another sweep holds that run) and
    the store is read again: a run that another sweep finished (and evaluated) meanwhile, or that is
    alive in another process, is skipped rather than redone.
    """

    RENEW_S = 30.0  # heartbeat of the slots: what a sweep on another host judges them by

    def __init__(self, store, spec: SweepSpec, limit: int):
        self.store, self.spec, self.limit = store, spec, limit
        self.pool = f"sweep:{spec.name}"
        self.runs = {r.name: r for r in spec.runs}
        self.renewed = time.monotonic()

    def claim(self, job):
        verdict = self.store.take_slot(self.pool, self.limit, job.name)
        if verdict != "go":
            return verdict
        why = self.done_elsewhere(job.name)
        if why:
            self.store.release_slot(self.pool, job.name)
            return "skip", why
        return "go"

    def done_elsewhere(self, name: str) -> str | None:
        """Why ``name`` needs no job now (read from the store just before starting it), or None."""
        row = self.store.get_run(name, details=False)
        if row is None:
            return None
        status = row["effective_status"]
        if status == "running":
            return f"running in another process ({row.get('host')}, pid {row.get('pid')})"
        if status == "queued" and _job_alive(row):
            return f"queued in another sweep's job {row.get('job_id')}"
        if status != "done":
            return None
        evaluation, run = self.spec.evaluation, self.runs.get(name)
        if evaluation is None or run is None:
            return "done by another sweep run"
        eps = evaluation.eps if evaluation.eps is not None else run.cfg.eps
        if self.store.evaluation_exists(name, evaluation.attack, eps, evaluation.n_examples):
            return "done and evaluated by another sweep run"
        return None

    def started(self, job, controller_pid: int, controller_start: str | None) -> None:
        """The job's controller holds the slot too: a job left running by a killed sweep keeps it."""
        self.store.attach_job(self.pool, job.name, controller_pid, controller_start)

    def release(self, job) -> None:
        self.store.release_slot(self.pool, job.name)

    def tick(self) -> None:
        if time.monotonic() - self.renewed >= self.RENEW_S:
            self.store.renew_slots(self.pool)
            self.renewed = time.monotonic()

    def close(self) -> None:
        self.store.release_slot(self.pool)


class _RaisedBySigterm(KeyboardInterrupt):
    """SIGTERM to the sweep process: handled like Ctrl-C."""


def _sigterm_interrupts():
    """While running jobs, SIGTERM raises KeyboardInterrupt (in the main thread), like Ctrl-C."""
    @contextlib.contextmanager
    def ctx():
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            raise _RaisedBySigterm()

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    return ctx()


def _check_inputs(runs: list[PlannedRun]) -> None:
    """Files every run needs (generated data, data folder) must exist before anything is submitted."""
    for run in runs:
        cfg = run.cfg
        if cfg.generated_data and not Path(cfg.generated_data).expanduser().is_file():
            raise UserError(f"run {run.name}: generated_data file not found: {cfg.generated_data}")
        if cfg.data_dir and not Path(cfg.data_dir).expanduser().exists():
            raise UserError(f"run {run.name}: data_dir not found: {cfg.data_dir}")


def _end_if_running(store, name: str, status: str, info: str) -> None:
    """A job that ended without recording (killed, out of memory, stopped) leaves its run running or
    queued: record ``status`` (failed / interrupted)."""
    row = store.get_run(name, details=False)
    if row is not None and row["status"] in ("running", "queued"):  # its job is over: nothing runs it any more
        store.finish_run(name, status=status, error=info[:2000])


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, desc="runs", unit="run", file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------------- executors
class _InlineRunner:
    def __init__(self):
        self.current = None

    def stopped(self) -> list[str]:
        return [self.current.name] if self.current is not None else []

    def run(self, jobs, *, on_submit, on_done, on_adopted_done=None, wait: bool, poll_s: float) -> None:
        for job in jobs:
            on_submit(job, str(os.getpid()))
            self.current = job
            try:
                result = job()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001
                on_done(job, "failed", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}")
            else:
                status = (result or {}).get("status", "done")
                on_done(job, "done" if status == "done" else status, (result or {}).get("error") or "")
            self.current = None


def _per_node(total: int | None, per_node: int | None, nodes: int, what: str) -> int | None:
    """``what`` per node from a per-node count or a per-job total (which must split evenly over the nodes)."""
    if per_node is not None:
        if total is not None and total != per_node * nodes:
            raise UserError(f"executor: {what}_per_job {total} != {what}_per_node {per_node} x nodes {nodes}; "
                            f"give one of them")
        return per_node
    if total is None:
        return None
    if total % nodes:
        raise UserError(f"executor: {what}_per_job {total} does not split over {nodes} nodes; use "
                        f"{what}_per_node")
    return total // nodes


def slurm_parameters(opts: ExecutorOptions, sweep: str) -> dict[str, Any]:
    """The submitit (``AutoExecutor.update_parameters``) parameters of one run's job.

    ``nodes`` x ``tasks_per_node`` ranks, one per GPU by default: submitit's ``srun`` starts every task
    and each joins the run's process group (``RunJob``). GPUs per node default to ``gpus_per_job /
    nodes``, else 1; ``gpus_per_node: 0`` gives CPU jobs (gloo). ``mem_gb`` is per node.
    """
    if opts.nodes < 1:
        raise UserError(f"invalid executor.nodes {opts.nodes}: must be >= 1")
    gpus = _per_node(opts.gpus_per_job, opts.gpus_per_node, opts.nodes, "gpus")
    gpus = 1 if gpus is None else gpus
    tasks = _per_node(opts.tasks_per_job, opts.tasks_per_node, opts.nodes, "tasks") or max(gpus, 1)
    if gpus and tasks > gpus:
        raise UserError(f"executor: {tasks} tasks per node for {gpus} GPU(s) per node; each task (rank) needs "
                        f"its own GPU")
    params: dict[str, Any] = {
        "name": f"{opts.name_prefix}-{sweep}"[:64], "timeout_min": opts.timeout_min, "nodes": opts.nodes,
        "tasks_per_node": tasks, "slurm_array_parallelism": opts.array_parallelism,
        "slurm_signal_delay_s": opts.signal_delay_s,
    }
    if gpus:
        params["gpus_per_node"] = gpus
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.cpus_per_task:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if opts.sbatch:
        params["slurm_additional_parameters"] = {str(k).replace("-", "_"): v for k, v in opts.sbatch.items()}
    if opts.setup:
        params["slurm_setup"] = list(opts.setup)
    return params


@dataclass(frozen=True)
class SlurmShare:
    """How a new submission shares ``array_parallelism`` with the alive jobs of earlier submissions of its sweep.

    Each Slurm array has its own ``%`` limit, so a second submission gets what the first leaves: ``parallelism``
    = the limit less the alive jobs; when they hold it all, the new array waits for them (``afterany``) and then
    runs at the full limit. Never more than the limit run at once; conservative while the others drain.
    """
    parallelism: int
    after: tuple[str, ...] = ()

    @property
    def dependency(self) -> str | None:
        return f"afterany:{':'.join(self.after)}" if self.after else None

    def describe(self) -> str:
        if self.after:
            return f"this array starts when they end (afterany), then runs {self.parallelism} at a time"
        return f"this array runs {self.parallelism} at a time"


def slurm_share(array_parallelism: int, held_job_ids: list[str]) -> SlurmShare:
    free = array_parallelism - len(held_job_ids)
    if free >= 1:
        return SlurmShare(free)
    return SlurmShare(array_parallelism, tuple(held_job_ids))


class _SlurmRunner:
    """submitit's Slurm executor: one job (array task) per run."""

    def __init__(self, folder: Path, opts: ExecutorOptions, sweep: str, share: SlurmShare | None = None):
        # Without Slurm accounting every status poll warns that sacct failed; submitit falls back to squeue.
        logging.getLogger("submitit").setLevel(logging.ERROR)
        self.opts = opts
        self.executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="slurm",
                                              slurm_max_num_timeout=opts.max_requeues,
                                              slurm_python=sys.executable)
        params = slurm_parameters(opts, sweep)
        if share is not None:
            params["slurm_array_parallelism"] = share.parallelism
            if share.dependency:
                extra = dict(params.get("slurm_additional_parameters") or {})
                extra["dependency"] = ",".join(filter(None, [extra.get("dependency"), share.dependency]))
                params["slurm_additional_parameters"] = extra
        try:
            self.executor.update_parameters(**params)
        except (ValueError, TypeError) as exc:
            raise UserError(f"invalid Slurm options: {str(exc).splitlines()[0]}") from None

    def submit(self, jobs) -> list:
        try:
            if self.opts.use_array and len(jobs) > 1:
                with self.executor.batch():
                    sjobs = [self.executor.submit(job) for job in jobs]
            else:
                sjobs = [self.executor.submit(job) for job in jobs]
        except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
            msg = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
            if isinstance(msg, bytes):
                msg = msg.decode(errors="replace")
            raise UserError(f"sbatch failed: {str(msg).strip().splitlines()[-1] if str(msg).strip() else exc}") \
                from None
        return sjobs

    def stopped(self) -> list[str]:
        return []  # Slurm jobs keep running when the sweep stops waiting

    def run(self, jobs, *, on_submit, on_done, on_adopted_done=None, wait: bool, poll_s: float) -> None:
        sjobs = self.submit(jobs)
        for job, sjob in zip(jobs, sjobs):
            on_submit(job, str(sjob.job_id))
        if not wait:
            return
        active = dict(zip(sjobs, jobs))
        try:
            while active:
                for sjob in [j for j in active if j.done()]:
                    job = active.pop(sjob)
                    on_done(job, *job_outcome(sjob))
                if active:
                    time.sleep(max(poll_s, 2.0))
        except KeyboardInterrupt:
            print(f"stopped waiting; {len(active)} Slurm job(s) keep running (see `robustscale sweep status`)",
                  file=sys.stderr)
            raise
