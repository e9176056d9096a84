"""The parser of ``robustscale sweep plan|run|status SPEC`` (built for every start of the CLI: no heavy imports; see cli.py)."""
from __future__ import annotations

import argparse

from .common import add_flops_per_second_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="plan (with its bill), run and follow a sweep of training runs",
        description="A sweep spec (YAML) expands a base recipe over grid / zip axes and seeds into named, validated "
        "runs. `plan` prints them with their training FLOPs, device-hours, energy and cost; `run` trains and "
        "evaluates what is not done yet (locally or on Slurm), resuming interrupted runs; `status` shows progress.")
    ssub = p.add_subparsers(dest="sweep_command", metavar="<action>")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("spec", help="sweep spec YAML")
        q.add_argument("--store", default=None,
                       help="store URL or .db path (default: the spec's store, $ROBUSTSCALE_STORE, else "
                       "<output_dir>/runs.db)")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="TrainConfig value for every run, over the spec's base (repeatable)")
        q.add_argument("--json", action="store_true", help="print JSON instead of tables")

    q = ssub.add_parser("plan", help="print the expanded runs with estimated FLOPs, device-hours, energy and cost",
                        description="Expand and validate the spec (nothing runs, nothing is written). FLOPs are "
                        "measured per model/method/steps (meta device, cached); time needs a throughput: "
                        "--throughput or --flops-per-second, the spec's cost.throughput / cost.flop_rate, or finished "
                        "runs in the store.")
    common(q)
    q.add_argument("--throughput", type=float, default=None, metavar="IMG_PER_S",
                   help="training images per second of one job (default: measured in the store)")
    add_flops_per_second_argument(q, "the spec's cost.flop_rate, else runs measured in the store, else the "
                                  "device's figure in compute/throughput.yaml; each run's img/s is this over its FLOPs "
                                  "per image; --flop-rate is the old name", old_name="--flop-rate", dest="flop_rate")
    q.add_argument("--device-type", default=None, help="device type to price (a key of prices.yaml, e.g. H100)")
    q.add_argument("--price-preset", default=None, help="price preset (default: the spec's, else 'default')")
    q.add_argument("--no-cost", action="store_true", help="only expand the runs (no FLOP measurement)")
    q.set_defaults(handler="run_plan")

    q = ssub.add_parser("run", help="train and evaluate every run that is not done yet",
                        description="Submit the runs that are not done (by config hash), resume interrupted ones "
                        "from their checkpoints, evaluate each finished run with the spec's evaluation, and record "
                        "everything in the store. Exit code 1 if a run failed.")
    common(q)
    q.add_argument("--executor", default="local", choices=("local", "slurm", "inline"),
                   help="local: subprocesses via submitit (default); slurm: sbatch via submitit; inline: this process")
    q.add_argument("--max-parallel", type=int, default=None, help="local: runs at once (default: spec, else 1)")
    q.add_argument("--partition", default=None, help="slurm partition")
    q.add_argument("--gpus-per-job", type=int, default=None, help="GPUs per run (>1: DDP in one job)")
    q.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task")
    q.add_argument("--mem-gb", type=float, default=None, help="memory per job in GB")
    q.add_argument("--timeout-min", type=int, default=None, help="time limit per job in minutes (then requeue)")
    q.add_argument("--array-parallelism", type=int, default=None, help="slurm: array tasks running at once")
    q.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="extra #SBATCH option, e.g. --sbatch account=myproj --sbatch qos=high (repeatable)")
    q.add_argument("--no-wait", action="store_true", help="slurm: submit and return (follow with `sweep status`)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(handler="run_run")

    q = ssub.add_parser("status", help="table of done / running / failed / queued runs with compute spent so far",
                        description="One row per run of the spec with its status in the store (done, running, "
                        "failed, interrupted, queued), the compute it has spent so far and its accuracies; nothing "
                        "is trained or written.")
    common(q)
    q.set_defaults(handler="run_status")

    p.set_defaults(handler=None)
