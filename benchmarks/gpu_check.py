"""Every GPU claim checked in one short command (run by ``benchmarks/gpu_check.sh``).

    bash benchmarks/gpu_check.sh                    # default budget 420 s, results in $OUT or ./gpu-check/
    bash benchmarks/gpu_check.sh --budget-s 300
    bash benchmarks/gpu_check.sh --dry-run          # print the plan and each step's allotted time; runs nothing

Steps, most important first, each a subprocess with its own time limit (its share of the budget plus
whatever earlier steps left unused, never past the overall deadline):

1. ``pytest -m cuda tests/cuda``: fp32/bf16/fp16 training steps, input-only attack gradients, compile vs
   eager, bit-exact resume, channels-last, 1-process NCCL DDP, AutoAttack GPU vs CPU per example.
2. ``robustscale bench --device cuda``: WRN-28-10, PGD-10, bf16 + compile, ours vs the common
   implementation in alternating rounds; img/s of both, the ratio, FLOP/s and MFU against the measured
   bf16 matmul peak of the same GPU.
3. AutoAttack (standard) examples/s on WRN-28-10 at eps 8/255, robustscale vs pyautoattack called
   directly on the same model and images, with per-example agreement.
4. Peak GPU memory of one training step per method at the bench batch size.
5. With 2+ GPUs: a run started on 2 GPUs (NCCL), stopped mid-epoch and resumed on 1 against the same run
   uninterrupted on 1 (``benchmarks/nccl_resize.py``): same FLOPs and images, world sizes [2, 1].

Writes ``gpu-check.json`` (every step's command, exit code, seconds, parsed figures),
``gpu-check.md`` (a summary to paste into docs/benchmarks.md) and ``gpu-check.log`` (every step's output). A step that runs out of time is
killed and recorded as ``timeout``; the script always writes its summary and exits 0 unless it
could not start (so the files come back from a device machine whatever happened).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The steps' shares of the budget sum to 0.9, so 10 % stays for start-up and writing the summary.
RESERVE_SHARE = 0.10
MIN_STEP_S = 10.0  # a step given less would only spend it starting CUDA: skip it instead


@dataclass
class Step:
    name: str
    share: float  # of the budget
    argv: list[str]
    what: str
    parse: str = "text"  # "json": the step prints one JSON object last
    result: dict = field(default_factory=dict)


def _robustscale() -> list[str]:
    return [sys.executable, "-m", "robustscale"]


def available_methods() -> list[str]:
    from robustscale.config import Method

    return [m.value for m in Method]


def plan(args) -> list[Step]:
    batch = str(args.batch_size)
    bench_common = ["--device", "cuda", "--model", args.model, "--attack-steps", "10", "--batch-size", batch,
                    "--amp", "bf16", "--json"]
    steps = [
        Step("cuda-tests", 0.24, [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                                  "tests/cuda"],
             "pytest -m cuda: precisions, input-only gradients, compile, resume, channels-last, NCCL, AutoAttack"),
        Step("bench", 0.25, _robustscale() + ["bench", *bench_common, "--method", "pgd", "--compile", "--baseline",
                                               "--steps", "5", "--warmup", "2", "--epochs", "3"],
             f"{args.model} PGD-10 bf16+compile, batch {batch}: ours vs common implementation, MFU", "json"),
        Step("autoattack", 0.25, [sys.executable, str(REPO / "benchmarks" / "bench_autoattack.py"), "--device", "cuda",
                                  "--random-model", args.model, "--dataset", "cifar10", "--n", str(args.aa_n),
                                  "--eps", "8/255", "--json", "-"],
             f"AutoAttack standard on {args.model}, eps 8/255, {args.aa_n} images: ours vs pyautoattack direct",
             "json"),
    ]
    steps.append(Step("memory", 0.10, [sys.executable, str(REPO / "benchmarks" / "bench_memory.py"), "--device", "cuda",
                                       "--model", args.model, "--batch-size", batch, "--amp", "bf16", "--json"],
                      f"peak memory of one step per method ({', '.join(available_methods())}), batch {batch}", "json"))
    steps.append(Step("nccl-resize", 0.06, [sys.executable, str(REPO / "benchmarks" / "nccl_resize.py")],
                      "2 GPUs (NCCL) -> 1 GPU resume vs 1 GPU uninterrupted: FLOPs, world sizes, weights", "json"))
    return steps


def _last_json(text: str):
    """The last JSON object in ``text`` that starts at the beginning of a line and runs to the end (what a
    command's ``--json`` prints last, indented or not), else None."""
    starts = [i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")]
    for start in reversed(starts):
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            continue
    return None


def _figures(step: Step, stdout: str) -> dict:
    if step.name == "cuda-tests":
        tail = [line for line in stdout.strip().splitlines()
                if any(w in line for w in (" passed", " failed", " skipped", " error", "no tests ran"))]
        return {"pytest_summary": tail[-1].strip("= ") if tail else None}
    data = _last_json(stdout)
    if not isinstance(data, dict):
        return {}
    if step.name == "nccl-resize":
        return data
    if step.name == "memory":
        return {f"{m}_peak_memory_gib": r["peak_memory_bytes"] / 2**30 for m, r in data.get("methods", {}).items()}
    if step.name == "bench":
        ours, base = data.get("ours") or {}, data.get("baseline") or {}
        figures = {
            "batch_size": data.get("batch_size"), "compile": data.get("compile"),
            "ours_images_per_second": ours.get("images_per_second"),
            "baseline_images_per_second": base.get("images_per_second"),
            "ratio": data.get("ratio"),
            "flops_per_image": ours.get("flops_per_image"),
            "achieved_flops_per_second": ours.get("achieved_flops_per_second"),
            "peak_flops_per_second": data.get("peak_flops_per_second"),
            "mfu": ours.get("mfu"),
            "peak_memory_gib": ours["peak_memory_bytes"] / 2**30 if ours.get("peak_memory_bytes") else None,
        }
        return {k: v for k, v in figures.items() if v is not None}
    if step.name == "autoattack":
        rows = {r.get("path"): r for r in data.get("rows", [])}
        o, r = rows.get("official", {}), rows.get("robustscale", {})
        return {"n": data.get("n"), "official_examples_per_second": o.get("examples_per_second"),
                "robustscale_examples_per_second": r.get("examples_per_second"),
                "speedup": (r["examples_per_second"] / o["examples_per_second"]
                            if r.get("examples_per_second") and o.get("examples_per_second") else None),
                "same_per_example": data.get("same_per_example"),
                "clean_acc": r.get("clean_acc"), "robust_acc": r.get("robust_acc"),
                "official_robust_acc": o.get("robust_acc")}
    return {}


def run_steps(steps: list[Step], budget_s: float, out_dir: Path, log) -> None:
    deadline = time.monotonic() + budget_s * (1 - RESERVE_SHARE)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    carried = 0.0  # time earlier steps were allotted but did not use
    for step in steps:
        left = deadline - time.monotonic()
        allotted = budget_s * step.share + carried
        limit = min(allotted, left)
        if limit < MIN_STEP_S:
            step.result = {"status": "skipped", "reason": f"only {max(left, 0):.0f} s of the budget left"}
            log(f"[{step.name}] skipped: {step.result['reason']}")
            continue
        log(f"[{step.name}] {step.what} (limit {limit:.0f} s)\n  $ {shlex.join(step.argv)}")
        t0 = time.monotonic()
        try:
            proc = subprocess.run(step.argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit)
            status, rc, stdout, stderr = ("ok" if proc.returncode == 0 else "failed"), proc.returncode, \
                proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            status, rc = "timeout", None
            stdout, stderr = (_text(exc.stdout), _text(exc.stderr))
        seconds = time.monotonic() - t0
        carried = max(allotted - seconds, 0.0)
        # one log file for all steps: a device machine returns at most 8 files
        with open(out_dir / "gpu-check.log", "a") as fh:
            fh.write(f"===== {step.name}: {shlex.join(step.argv)}\n{stdout}\n----- stderr\n{stderr[-20000:]}\n")
        step.result = {"status": status, "returncode": rc, "seconds": round(seconds, 1), **_figures(step, stdout)}
        log(f"[{step.name}] {status} in {seconds:.0f} s " + json.dumps({k: v for k, v in step.result.items()
                                                                       if k not in ("status", "seconds")}))


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def markdown(steps: list[Step], meta: dict) -> str:
    lines = [f"# GPU check {meta['date']}", "",
             f"GPU: {meta.get('gpu') or 'none found'}; torch {meta.get('torch')}; budget {meta['budget_s']} s; "
             f"command `{meta['command']}`", "",
             "| step | status | s | figures |", "| --- | --- | --- | --- |"]
    for s in steps:
        figs = ", ".join(f"{k} {_fmt(v)}" for k, v in s.result.items() if k not in ("status", "seconds", "returncode"))
        lines.append(f"| {s.name} | {s.result.get('status', 'not run')} | {_fmt(s.result.get('seconds'))} | "
                     f"{figs or '-'} |")
    return "\n".join(lines) + "\n"


def _environment() -> dict:
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the summary must still be written
        meta["torch"] = f"not importable: {exc}"
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget for all steps (s)")
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "gpu-check"),
                   help="folder for gpu-check.json / .md and the step logs ($OUT, else ./gpu-check)")
    p.add_argument("--model", default="wide_resnet28_10", help="model of the bench and AutoAttack steps")
    p.add_argument("--batch-size", type=int, default=256, help="bench batch size")
    p.add_argument("--aa-n", type=int, default=32, help="AutoAttack images")
    p.add_argument("--dry-run", action="store_true", help="print the plan and each step's allotted time, run nothing")
    args = p.parse_args(argv)
    if args.budget_s < 60:
        print(f"error: --budget-s {args.budget_s:g} is too small: give at least 60 s", file=sys.stderr)
        return 2
    steps = plan(args)
    if args.dry_run:
        print(f"GPU check plan, budget {args.budget_s:.0f} s ({RESERVE_SHARE:.0%} reserve; a step's unused time "
              "passes to the next):")
        for s in steps:
            print(f"  {s.name:<18} {args.budget_s * s.share:6.0f} s  {s.what}\n      $ {shlex.join(s.argv)}")
        print(f"  {'reserve':<18} {args.budget_s * RESERVE_SHARE:6.0f} s")
        return 0
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu-check.log").write_text("")
    meta = {**_environment(), "budget_s": args.budget_s,
            "command": "bash benchmarks/gpu_check.sh " + shlex.join(argv if argv is not None else sys.argv[1:])}

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"GPU check: {meta.get('gpu') or 'NO CUDA DEVICE'}, torch {meta.get('torch')}, budget {args.budget_s:.0f} s")
    run_steps(steps, args.budget_s, out_dir, log)
    result = {**meta, "steps": [{"name": s.name, "what": s.what, "command": shlex.join(s.argv), **s.result}
                                for s in steps]}
    (out_dir / "gpu-check.json").write_text(json.dumps(result, indent=2, default=str))
    (out_dir / "gpu-check.md").write_text(markdown(steps, meta))
    log(markdown(steps, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
