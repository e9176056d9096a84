"""The cost model: exact arithmetic from a given price table, presets, overrides, bad input."""
from __future__ import annotations

from fractions import Fraction

import pytest
import yaml

from robustscale.compute import CostModel, StepFlops, load_price_table, summarize_run_compute
from robustscale.errors import UserError

TABLE = {
    "device_types": {"GPU-A": ["alpha"], "GPU-B": ["beta"], "gpu": [], "cpu": []},
    "presets": {
        "lab": {
            "description": "test prices",
            "electricity_usd_per_kwh": 0.25,
            "pue": 1.5,
            "carbon_intensity_kg_per_kwh": 0.5,
            "devices": {
                "GPU-A": {"usd_per_hour_low": 2.0, "usd_per_hour_high": 3.0, "power_w": 400},
                "GPU-B": {"usd_per_hour_low": 0.5, "usd_per_hour_high": 0.75, "power_w": 250},
                "gpu": {"usd_per_hour_low": 1.0, "usd_per_hour_high": 1.0, "power_w": 300},
                "cpu": {"usd_per_hour_low": 0.125, "usd_per_hour_high": 0.25, "power_w": 100},
            },
        },
    },
}


@pytest.fixture
def table_path(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(TABLE))
    return path


def test_cost_is_exact_arithmetic(table_path):
    cm = CostModel.from_yaml(table_path, preset="lab")
    out = cm.cost("GPU-A", device_hours=10.0, energy_kwh=4.0)
    assert out == {"electricity_usd": 4.0 * 1.5 * 0.25, "cloud_usd_low": 20.0, "cloud_usd_high": 30.0}
    assert Fraction(out["electricity_usd"]) == Fraction(3, 2)  # 4 kWh x PUE 1.5 x $0.25
    assert cm.cost("GPU-B", 2.0, None) == {"electricity_usd": None, "cloud_usd_low": 1.0, "cloud_usd_high": 1.5}
    assert cm.estimate_energy_kwh("GPU-A", 5.0) == 2.0  # 400 W x 5 h = 2 kWh of IT energy
    assert cm.estimate_energy_kwh("GPU-A", 5.0, include_pue=True) == 3.0
    assert cm.emissions_kg(2.0) == 1.0 and cm.emissions_kg(None) is None
    # The packaged table is still there under the user's (deep merge), with its own device types.
    assert "paper-2024" in load_price_table(table_path)["presets"]


def test_paper_2024_preset_reproduces_the_study():
    cm = CostModel.from_yaml(preset="paper-2024")
    assert (cm.electricity_usd_per_kwh, cm.pue) == (0.12, 1.58)
    for dev in ("H100", "A100-40GB", "V100", "cpu"):
        price = cm.price(dev)
        assert (price.usd_per_hour_low, price.usd_per_hour_high, price.power_w) == (0.43, 1.46, 300)
    # 4 GPUs x 100 h = 400 GPU-hours: 300 W x 400 h x PUE 1.58 x $0.12/kWh, and 400 x $0.43-1.46.
    kwh = cm.estimate_energy_kwh("V100", 400.0)
    assert kwh == pytest.approx(120.0, rel=1e-15)
    out = cm.cost("V100", 400.0, kwh)
    assert out["electricity_usd"] == pytest.approx(300 * 400 / 1000 * 1.58 * 0.12, rel=1e-12)
    assert out["cloud_usd_low"] == pytest.approx(172.0) and out["cloud_usd_high"] == pytest.approx(584.0)


def test_default_preset_covers_the_usual_devices():
    cm = CostModel.from_yaml()
    for dev in ("H100", "A100-80GB", "A100-40GB", "V100", "L4", "T4", "RTX 4090", "cpu", "gpu"):
        p = cm.price(dev)
        assert 0 < p.usd_per_hour_low <= p.usd_per_hour_high and p.power_w > 0
    assert cm.pue >= 1 and cm.electricity_usd_per_kwh > 0 and cm.carbon_intensity_kg_per_kwh > 0


@pytest.mark.parametrize("name,dev", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100"), ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA A100 80GB PCIe", "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
    ("Tesla V100-SXM2-16GB", "V100"), ("NVIDIA L4", "L4"), ("Tesla T4", "T4"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"), ("NVIDIA L40S", "gpu"), ("NVIDIA RTX A6000", "gpu"),
    ("AMD EPYC 7B13", "cpu"), ("Intel(R) Xeon(R) Platinum 8480+", "cpu"), ("", "cpu"), (None, "cpu"),
])
def test_device_type_for(name, dev):
    assert CostModel.from_yaml().device_type_for(name) == dev


def test_overrides_nested_and_dotted(table_path):
    cm = CostModel.from_yaml(table_path, preset="lab", overrides={
        "pue": 1.25, "devices": {"GPU-A": {"usd_per_hour_high": 4}}, "devices.GPU-B.power_w": "500"})
    assert cm.pue == 1.25
    assert cm.price("GPU-A").usd_per_hour_high == 4.0 and cm.price("GPU-A").usd_per_hour_low == 2.0
    assert cm.estimate_energy_kwh("GPU-B", 2.0) == 1.0
    # paper-2024 prices every type with one entry; an override for one type keeps the rest.
    cm = CostModel.from_yaml(preset="paper-2024", overrides={"devices.H100.usd_per_hour_high": 2.0})
    assert cm.price("H100").usd_per_hour_high == 2.0 and cm.price("H100").usd_per_hour_low == 0.43
    assert cm.price("V100").usd_per_hour_high == 1.46


def test_user_table_adds_a_device_type(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({
        "device_types": {"MI300X": ["MI300X"]},
        "presets": {"default": {"devices": {"MI300X": {"usd_per_hour_low": 1.5, "usd_per_hour_high": 4.0,
                                                       "power_w": 750}}}}}))
    cm = CostModel.from_yaml(path)
    assert cm.device_type_for("AMD Instinct MI300X") == "MI300X"
    assert cm.cost("MI300X", 2.0, None)["cloud_usd_high"] == 8.0
    assert cm.price("H100").power_w == 700  # packaged numbers kept


@pytest.mark.parametrize("kwargs,needle", [
    (dict(preset="nope"), "unknown price preset 'nope'; valid: default, paper-2024"),
    (dict(overrides={"pue": 0.9}), "invalid pue 0.9"),
    (dict(overrides={"electricity_usd_per_kwh": -0.1}), "invalid electricity_usd_per_kwh of preset 'default' -0.1"),
    (dict(overrides={"devices.H100.usd_per_hour_low": -1}), "invalid usd_per_hour_low of H100"),
    (dict(overrides={"devices.H100.usd_per_hour_low": "cheap"}), "expected a non-negative number"),
    (dict(overrides={"devices.H100.usd_per_hour_low": 100}), "usd_per_hour_low 100.0 > usd_per_hour_high"),
    (dict(overrides={"devices.H100.watts": 100}), "unknown key 'watts' for H100"),
    (dict(overrides={"devices.TPU": {"usd_per_hour_low": 1, "usd_per_hour_high": 2, "power_w": 3}}),
     "unknown device type 'TPU'"),
    (dict(overrides={"puee": 1.2}), "unknown key 'puee'"),
    (dict(path="/nonexistent/prices.yaml"), "config file not found"),
])
def test_bad_price_tables(kwargs, needle):
    with pytest.raises(UserError) as info:
        CostModel.from_yaml(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_unknown_device_type_lists_valid_ones():
    cm = CostModel.from_yaml()
    with pytest.raises(UserError, match=r"unknown device type 'B200' in price preset 'default'; valid: H200, H100, "
                                        r"A100-80GB, A100-40GB, V100, L4, T4, RTX 4090, gpu, cpu"):
        cm.cost("B200", 1.0, 1.0)
    with pytest.raises(UserError, match="invalid device_hours -1"):
        cm.cost("H100", -1, 1.0)
    with pytest.raises(UserError, match="invalid energy_kwh -2"):
        cm.cost("H100", 1.0, -2)


def _step():
    return StepFlops("m", "pgd", 10, (3, 32, 32), forward_flops=1e9, input_backward_flops=1e9,
                     full_backward_flops=2e9, attack_step_flops=2e9, train_step_flops=23e9,
                     attack_flops_fraction=20 / 23, analytic_train_step_flops=36e9)


def test_summarize_run_compute_measured(table_path):
    cm = CostModel.from_yaml(table_path, preset="lab")
    tracker = {"wall_seconds": 7200.0, "device_hours": 8.0, "device_name": "alpha 80GB", "device_count": 4,
               "energy_kwh": 3.0, "emissions_kg": 1.2}
    rec = summarize_run_compute(_step(), steps=100, images_per_step=256, eval_flops=5e12, tracker_summary=tracker,
                                cost_model=cm)
    assert rec["train_flops"] == 23e9 * 100 * 256
    assert rec["train_flops_per_image"] == 23e9 and rec["attack_flops_fraction"] == 20 / 23
    assert rec["eval_flops"] == 5e12
    assert (rec["wall_seconds"], rec["device_hours"], rec["device_count"]) == (7200.0, 8.0, 4)
    assert rec["device_type"] == "GPU-A" and rec["device_name"] == "alpha 80GB"
    assert (rec["energy_kwh"], rec["emissions_kg"]) == (3.0, 1.2)  # the tracker's figures, unchanged
    assert rec["electricity_usd"] == 3.0 * 1.5 * 0.25 and rec["electricity_basis"] == "measured"
    assert (rec["cloud_usd_low"], rec["cloud_usd_high"]) == (16.0, 24.0)
    # images_seen (a last partial batch) wins over steps x batch
    rec = summarize_run_compute(_step(), 100, 256, 0, tracker, cm, device_type="GPU-B", images_seen=25_000)
    assert rec["train_flops"] == 23e9 * 25_000 and rec["device_type"] == "GPU-B" and rec["cloud_usd_low"] == 4.0


def test_summarize_run_compute_without_energy(table_path):
    cm = CostModel.from_yaml(table_path, preset="lab")
    tracker = {"wall_seconds": 3600.0, "device_hours": 2.0, "device_name": "beta", "device_count": 2,
               "energy_kwh": None, "emissions_kg": None}
    rec = summarize_run_compute(_step(), 10, 8, 0.0, tracker, cm)
    assert rec["energy_kwh"] is None and rec["emissions_kg"] is None  # unknown, not zero
    # electricity from the estimate: 250 W x 2 h = 0.5 kWh, x PUE 1.5 x $0.25
    assert rec["electricity_usd"] == 0.5 * 1.5 * 0.25 and rec["electricity_basis"] == "estimated"
    with pytest.raises(UserError, match="unknown device type 'GPU-C'"):
        summarize_run_compute(_step(), 10, 8, 0.0, tracker, cm, device_type="GPU-C")
