"""benchmarks/gpu_check.sh on the CPU: the dry run's plan, and the orchestration (time limits, budget carried
between steps, summaries written) driven with stand-in steps, since this machine has no GPU."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _run(*args, env=None):
    env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


def test_dry_run_prints_the_plan_within_budget_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _run("--dry-run", "--budget-s", "300", "--out", str(out), env={"OUT": str(out)})
    assert proc.returncode == 0, proc.stderr
    names = re.findall(r"^  (\S+)\s+(\d+) s", proc.stdout, flags=re.M)
    assert [n for n, _ in names] == ["cuda-tests", "bench", "autoattack", "memory", "nccl-resize", "reserve"]
    assert sum(int(s) for _, s in names) == pytest.approx(300, abs=len(names))  # each rounded to a second
    assert "pytest -m cuda" in proc.stdout and "--device cuda" in proc.stdout and "--baseline" in proc.stdout
    assert "wide_resnet28_10" in proc.stdout and "--amp bf16" in proc.stdout and "--compile" in proc.stdout
    assert not out.exists() and not (REPO / "gpu-check").exists()


def test_too_small_budget_is_one_line_exit_2(tmp_path):
    proc = _run("--budget-s", "5", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--budget-s 5" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_steps_get_limits_carry_unused_time_and_summaries_are_written(tmp_path, monkeypatch):
    gc = _module()
    monkeypatch.setattr(gc, "MIN_STEP_S", 2.0)
    figures = {"ours": {"images_per_second": 100.0, "mfu": 0.41, "peak_memory_bytes": 2**31,
                        "flops_per_image": 1e9, "achieved_flops_per_second": 1e11},
               "baseline": {"images_per_second": 50.0}, "ratio": 2.0, "peak_flops_per_second": 2.5e11}
    py = sys.executable
    steps = [
        gc.Step("cuda-tests", 0.1, [py, "-c", "print('3 passed, 1 skipped in 1.0s')"], "fake tests"),
        gc.Step("bench", 0.1, [py, "-c", f"import json; print('noise'); print(json.dumps({figures!r}, indent=2))"],
                "fake bench", "json"),
        gc.Step("autoattack", 0.6, [py, "-c", "import time; time.sleep(60)"], "too slow", "json"),
        gc.Step("memory", 0.1, [py, "-c", "print('never')"], "starved", "json"),
    ]
    lines = []
    # Budget 20 s, 18 s usable. Steps 1-2 (2 s each) take t1, t2 and pass on 4 - t1 - t2; step 3 gets its 12 s
    # plus that, so it is killed 16 s after the start; then < 2 s are left, less than step 4's minimum
    # (2 s here): it is skipped, not started. This holds whatever t1 and t2 are (each under its 2 s).
    (tmp_path / "gpu-check.log").write_text("")
    gc.run_steps(steps, 20, tmp_path, lines.append)
    res = {s.name: s.result for s in steps}
    assert res["cuda-tests"]["status"] == "ok" and res["cuda-tests"]["pytest_summary"].startswith("3 passed")
    assert res["bench"]["status"] == "ok"
    assert res["bench"]["ratio"] == 2.0 and res["bench"]["mfu"] == 0.41 and res["bench"]["peak_memory_gib"] == 2.0
    assert res["autoattack"]["status"] == "timeout"
    t12 = res["cuda-tests"]["seconds"] + res["bench"]["seconds"]
    assert res["autoattack"]["seconds"] == pytest.approx(16 - t12, abs=0.5)  # 12 s share + 4 - t1 - t2 carried
    assert res["memory"]["status"] == "skipped"
    log = (tmp_path / "gpu-check.log").read_text()
    assert "===== bench" in log and "noise" in log
    md = gc.markdown(steps, {"date": "today", "budget_s": 60, "command": "x", "gpu": None, "torch": "t"})
    assert "| bench | ok |" in md and "ratio 2" in md and "| memory | skipped |" in md


def test_last_json_takes_the_final_object():
    gc = _module()
    text = 'progress 1/3\n{"a": 1}\nmore\n{\n  "b": {"c": 2}\n}\n'
    assert gc._last_json(text) == {"b": {"c": 2}}
    assert gc._last_json("no json here") is None
