"""ComputeTracker: offline codecarbon energy on CPU, per run, no files, no network; disabled -> null."""
from __future__ import annotations

import socket
import time

import pytest
import torch

from robustscale.compute import ComputeTracker, add_summaries, cpu_model_name
from robustscale.config import TrainConfig


def _busy(seconds: float) -> None:
    a = torch.randn(192, 192)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Run in an empty folder with every outgoing connection refused (and recorded)."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.chdir(tmp_path)
    return attempts, tmp_path


def test_energy_measured_offline_per_run(offline):
    attempts, cwd = offline
    summaries = []
    for seconds in (0.6, 0.15):
        with ComputeTracker(TrainConfig(energy=True, country="USA"), device="cpu", device_count=1) as tracker:
            _busy(seconds)
        summaries.append(tracker.summary())
    long, short = summaries
    for s in summaries:
        assert s["energy_kwh"] > 0 and s["emissions_kg"] > 0
        assert s["device_name"] == cpu_model_name() and s["device_count"] == 1
        assert s["device_hours"] == pytest.approx(s["wall_seconds"] / 3600)
    assert long["wall_seconds"] >= 0.6 and 0.15 <= short["wall_seconds"] < long["wall_seconds"]
    # A fresh tracker per run: the second run's energy is its own, not the running total.
    assert short["energy_kwh"] < long["energy_kwh"]
    # Emissions follow the grid intensity of the configured country: same kg/kWh in both runs.
    assert short["emissions_kg"] / short["energy_kwh"] == pytest.approx(long["emissions_kg"] / long["energy_kwh"],
                                                                        rel=1e-6)
    assert attempts == [] and list(cwd.iterdir()) == []  # no network, no emissions.csv / lock in cwd


def test_energy_disabled_records_null(offline):
    with ComputeTracker(TrainConfig(energy=False), device="cpu", device_count=3) as tracker:
        _busy(0.05)
    s = tracker.summary()
    assert set(s) == {"wall_seconds", "device_hours", "device_name", "device_count", "energy_kwh", "emissions_kg"}
    assert s["energy_kwh"] is None and s["emissions_kg"] is None  # unknown, not zero
    assert s["wall_seconds"] >= 0.05 and s["device_count"] == 3
    assert s["device_hours"] == pytest.approx(s["wall_seconds"] * 3 / 3600)
    # stop() is idempotent and the summary frozen at exit
    assert tracker.stop() == s
    with pytest.raises(RuntimeError, match="one tracker per run"):
        tracker.start()


def test_unknown_country_is_a_user_error():
    from robustscale.errors import UserError

    with pytest.raises(UserError, match=r"unknown country \(ISO 3166-1 alpha-3.*\) 'XYZ'; valid: USA, CAN") as info:
        ComputeTracker(energy=True, country="xyz", device="cpu")
    assert "\n" not in str(info.value)
    assert ComputeTracker(energy=False, country="xyz", device="cpu").summary()["energy_kwh"] is None


def test_device_count_is_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    tracker = ComputeTracker(energy=False, device="cpu")
    assert tracker.device_count == 4
    assert tracker.summary()["wall_seconds"] == 0.0  # not started yet


def test_add_summaries():
    a = {"wall_seconds": 10.0, "device_hours": 0.5, "device_name": "X", "device_count": 2, "energy_kwh": 1.0,
         "emissions_kg": 0.25}
    b = {"wall_seconds": 5.0, "device_hours": 0.25, "device_name": "X", "device_count": 2, "energy_kwh": 0.5,
         "emissions_kg": 0.125}
    assert add_summaries(a, b) == {"wall_seconds": 15.0, "device_hours": 0.75, "device_name": "X",
                                   "device_count": 2, "energy_kwh": 1.5, "emissions_kg": 0.375}
    c = dict(b, device_name="Y", device_count=4, energy_kwh=None, emissions_kg=None)
    merged = add_summaries(a, c)
    assert merged["energy_kwh"] is None and merged["emissions_kg"] is None
    assert merged["device_name"] == "mixed" and merged["device_count"] == 4
