"""Wall time, devices and energy of one run (train or evaluate).

``ComputeTracker`` is a context manager around the work of ONE run. It measures wall time,
names the device and counts devices (the world size), and, unless disabled, measures energy
with codecarbon's ``OfflineEmissionsTracker``:

- offline: no network (country from config, default USA), no files written (no output
  methods, no emissions endpoint), log level ``error``;
- ``tracking_mode="process"`` and, on CUDA, only this process's GPU: under torchrun each rank
  measures its own share and the shares are summed over ranks when the block exits, so nothing
  is counted twice;
- one fresh codecarbon tracker per run: the figures are per run, never cumulative (the 2024
  study's emissions figure was cumulative by mistake). A resumed run adds its earlier
  summary with :func:`add_summaries`.

codecarbon reads NVML on NVIDIA GPUs, RAPL on Intel/AMD CPUs when readable, and otherwise a
power model of the CPU (its TDP x load). Its PUE stays at 1: ``energy_kwh`` is IT energy; the
cost model applies PUE (see ``robustscale.cost``). With energy disabled,
``energy_kwh`` and ``emissions_kg`` are ``None`` (unknown), not 0.
"""
from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
import warnings
from typing import Any, Mapping

import torch
import torch.distributed as dist

from ..errors import one_of

_log = logging.getLogger(__name__)

SUMMARY_KEYS = ("wall_seconds", "device_hours", "device_name", "device_count", "energy_kwh", "emissions_kg")


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform; ``"cpu"`` if unknown."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def detect_device(device: Any = None) -> tuple[str, str]:
    """``(kind, name)`` of the device a run uses: ``("cuda", "NVIDIA H100 80GB HBM3")`` or
    ``("cpu", "AMD EPYC 7B13")``. ``device`` defaults to CUDA when available."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return "cuda", torch.cuda.get_device_name(index)
    return dev.type if dev.type != "meta" else "cpu", cpu_model_name()


def world_size() -> int:
    """Number of processes (= devices) of the run: torch.distributed's, else $WORLD_SIZE, else 1."""
    try:
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
    except Exception:  # pragma: no cover - torch without distributed
        pass
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def check_country(code: str) -> None:
    """UserError unless codecarbon's offline energy-mix table knows ``code`` (ISO 3166-1 alpha-3)."""
    try:
        from codecarbon.input import DataSource

        known = DataSource().get_global_energy_mix_data()
    except Exception:  # pragma: no cover - codecarbon missing or its data unreadable: let it decide
        return
    if code not in known:
        preferred = [c for c in ("USA", "CAN", "GBR", "FRA", "DEU", "CHE", "NLD", "SWE", "JPN", "CHN") if c in known]
        one_of(code, preferred + sorted(c for c in known if c not in preferred),
               what="country (ISO 3166-1 alpha-3, for the grid carbon intensity)")


class ComputeTracker:
    """Measure wall time, device-hours and (optionally) energy of one run.

    Args:
        cfg: a TrainConfig (reads ``energy`` and ``country``) or None; keyword arguments win.
        energy: measure energy with codecarbon (False: energy/emissions recorded as None).
        country: ISO 3166-1 alpha-3 code for codecarbon's grid carbon intensity (default USA).
        device: the torch device the run computes on (default: CUDA if available, else CPU).
        output_dir: a folder codecarbon may use; nothing is written there (default: temp dir).
        device_count: devices of the run (default: the world size).
        measure_power_secs: codecarbon's sampling interval in seconds.
        reduce: sum energy over ranks when the block exits under torch.distributed
            (default: True when a process group is initialized). All ranks must then exit it.

    Usage::

        with ComputeTracker(cfg, device=device) as tracker:
            ...train...
        tracker.summary()  # {"wall_seconds", "device_hours", "device_name", "device_count",
                           #  "energy_kwh", "emissions_kg"}
    """

    def __init__(self, cfg: Any = None, *, energy: bool | None = None, country: str | None = None,
                 device: Any = None, output_dir: str | os.PathLike | None = None, device_count: int | None = None,
                 measure_power_secs: float = 15.0, reduce: bool | None = None):
        self.energy = bool(energy if energy is not None else getattr(cfg, "energy", True))
        self.country = str(country or getattr(cfg, "country", None) or "USA").upper()
        self.device = device
        self.output_dir = str(output_dir) if output_dir is not None and os.path.isdir(output_dir) else None
        self.device_count = int(device_count) if device_count is not None else world_size()
        self.measure_power_secs = float(measure_power_secs)
        self.reduce = reduce
        self.device_kind, self.device_name = detect_device(device)
        if self.energy:
            check_country(self.country)
        self._start: float | None = None
        self._wall: float | None = None
        self._tracker = None
        self._energy_kwh: float | None = None
        self._emissions_kg: float | None = None

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "ComputeTracker":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(reduce=exc_type is None)

    def start(self) -> "ComputeTracker":
        if self._start is not None:
            raise RuntimeError("ComputeTracker already started; use one tracker per run")
        if self.energy:
            self._tracker = self._start_codecarbon()
        self._sync()
        self._start = time.perf_counter()
        return self

    def stop(self, reduce: bool = True) -> dict[str, Any]:
        """Stop measuring (idempotent) and return :meth:`summary`."""
        if self._start is None or self._wall is not None:
            return self.summary()
        self._sync()
        self._wall = time.perf_counter() - self._start
        if self._tracker is not None:
            self._energy_kwh, self._emissions_kg = self._stop_codecarbon(self._tracker)
            self._tracker = None
        if reduce and self._should_reduce():
            self._all_reduce()
        return self.summary()

    def split(self, reduce: bool = True, restart: bool = True) -> dict[str, Any]:
        """End the current segment and (``restart``) start measuring the next; returns the ended segment.

        A run records one segment per checkpoint, saved with it, so that a run killed later loses only
        the segment in progress and no segment is ever counted twice. Under torch.distributed every rank
        must call it (energy is summed over ranks, like :meth:`stop`). On a stopped tracker it returns
        the last segment and, with ``restart=False``, leaves the tracker empty.
        """
        segment = self.stop(reduce=reduce)
        self._start = self._wall = self._tracker = self._energy_kwh = self._emissions_kg = None
        if restart:
            self.start()
        return segment

    # ------------------------------------------------------------------ results
    @property
    def wall_seconds(self) -> float:
        if self._start is None:
            return 0.0
        return self._wall if self._wall is not None else time.perf_counter() - self._start

    def summary(self) -> dict[str, Any]:
        """``wall_seconds``, ``device_hours`` (= wall x devices / 3600), ``device_name``,
        ``device_count``, ``energy_kwh`` (IT energy, kWh) and ``emissions_kg`` (kg CO2e).

        Energy and emissions are None when disabled, when codecarbon failed, or before the
        block exits; wall time and device-hours so far are available any time.
        """
        wall = self.wall_seconds
        return {"wall_seconds": wall, "device_hours": wall * self.device_count / 3600.0,
                "device_name": self.device_name, "device_count": self.device_count,
                "energy_kwh": self._energy_kwh, "emissions_kg": self._emissions_kg}

    # ------------------------------------------------------------------ internals
    def _sync(self) -> None:
        if self.device_kind == "cuda":
            torch.cuda.synchronize()

    def _gpu_ids(self) -> list | None:
        """This process's GPU as codecarbon wants it: the NVML index (CUDA_VISIBLE_DEVICES-aware)."""
        if self.device_kind != "cuda":
            return None
        dev = torch.device(self.device) if self.device is not None else torch.device("cuda")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        visible = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
        if visible:
            entry = visible[index] if index < len(visible) else None
            # codecarbon matches integer indexes reliably; a UUID entry is left to its default.
            return [int(entry)] if entry is not None and entry.isdigit() else None
        return [index]

    def _start_codecarbon(self):
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError:  # pragma: no cover - codecarbon is a dependency
            warnings.warn("codecarbon is not installed: energy_kwh will be null", stacklevel=3)
            return None
        # Silence codecarbon before it logs its first INFO line: importing it sets its logger to
        # $CODECARBON_LOG_LEVEL (default info), and the tracker applies log_level only late in __init__.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        kwargs = dict(country_iso_code=self.country, tracking_mode="process", output_methods=[],
                      output_handlers=[], emissions_endpoint=None, log_level="error",
                      output_dir=self.output_dir or tempfile.gettempdir(), allow_multiple_runs=True,
                      measure_power_secs=self.measure_power_secs, project_name="robustscale", pue=1.0)
        gpu_ids = self._gpu_ids()
        if gpu_ids is not None:
            kwargs["gpu_ids"] = gpu_ids
        try:
            tracker = OfflineEmissionsTracker(**kwargs)
            tracker.start()
        except Exception as exc:  # measurement must never kill a run
            _log.warning("energy measurement disabled: codecarbon failed to start (%s)", exc)
            return None
        return tracker

    @staticmethod
    def _stop_codecarbon(tracker) -> tuple[float | None, float | None]:
        try:
            tracker.stop()
            data = getattr(tracker, "final_emissions_data", None)
        except Exception as exc:
            _log.warning("energy measurement lost: codecarbon failed to stop (%s)", exc)
            return None, None
        if data is None:  # codecarbon swallows its own errors in start()/stop()
            _log.warning("energy measurement lost: codecarbon returned no data")
            return None, None
        return float(data.energy_consumed), float(data.emissions)

    def _should_reduce(self) -> bool:
        try:
            initialized = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        except Exception:  # pragma: no cover
            return False
        return initialized if self.reduce is None else bool(self.reduce and initialized)

    def _all_reduce(self) -> None:
        """Sum energy/emissions over ranks (None on any rank -> None) and take the longest wall time."""
        device = torch.device("cuda", torch.cuda.current_device()) if self.device_kind == "cuda" else torch.device("cpu")
        known = self._energy_kwh is not None and self._emissions_kg is not None
        vals = torch.tensor([self._energy_kwh or 0.0, self._emissions_kg or 0.0, 0.0 if known else 1.0],
                            dtype=torch.float64, device=device)
        wall = torch.tensor([self._wall], dtype=torch.float64, device=device)
        dist.all_reduce(vals, op=dist.ReduceOp.SUM)
        dist.all_reduce(wall, op=dist.ReduceOp.MAX)
        self._wall = float(wall.item())
        if vals[2].item() > 0:
            self._energy_kwh = self._emissions_kg = None
        else:
            self._energy_kwh, self._emissions_kg = float(vals[0].item()), float(vals[1].item())


def add_summaries(*summaries: Mapping[str, Any]) -> dict[str, Any]:
    """Combine the tracker summaries of the pieces of one run (e.g. before and after a resume).

    Wall time, device-hours, energy and emissions add up; energy/emissions are None if any
    piece lacks them. ``device_name``/``device_count`` come from the last piece, or
    ``"mixed"``/the max count if the pieces differ.
    """
    summaries = [s for s in summaries if s]
    if not summaries:
        return {"wall_seconds": 0.0, "device_hours": 0.0, "device_name": None, "device_count": 0,
                "energy_kwh": None, "emissions_kg": None}

    def total(key):
        values = [s.get(key) for s in summaries]
        return None if any(v is None for v in values) else float(sum(values))

    names = {s.get("device_name") for s in summaries}
    counts = [int(s.get("device_count") or 0) for s in summaries]
    return {"wall_seconds": total("wall_seconds") or 0.0, "device_hours": total("device_hours") or 0.0,
            "device_name": summaries[-1].get("device_name") if len(names) == 1 else "mixed",
            "device_count": counts[-1] if len(set(counts)) == 1 else max(counts),
            "energy_kwh": total("energy_kwh"), "emissions_kg": total("emissions_kg")}
