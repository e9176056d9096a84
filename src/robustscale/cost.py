"""Dollar cost of a run from a price table (``compute/prices.yaml`` shipped with the package).

A module of its own, beside ``compute/`` rather than in it, so that pricing imports no torch: ``scaling``
(``fit``, ``extrapolate``) prices compute without importing any training code. The tables stay with the
rest of the compute accounting's data in ``compute/`` (read without importing that package).

Conventions (the same for measured and imported runs):

- ``energy_kwh`` is **IT energy**: what the devices drew, as measured by codecarbon (NVML on
  NVIDIA GPUs, RAPL or a CPU power model on CPUs) with codecarbon's own PUE left at 1, or as
  estimated by :meth:`CostModel.estimate_energy_kwh` (power x hours). It does not depend on the
  data centre, so runs on different clusters stay comparable.
- **PUE is applied once, in** ``electricity_usd = energy_kwh * pue * electricity_usd_per_kwh``:
  the bill is paid for facility energy (IT energy plus cooling and power conversion). The 2024
  study applied PUE 1.58 on top of 300 W x GPUs x hours; ``preset="paper-2024"`` with
  :meth:`CostModel.estimate_energy_kwh` reproduces exactly that.
- ``emissions_kg`` follows codecarbon (IT energy x grid carbon intensity, no PUE), so the
  tracker's figure and :meth:`CostModel.emissions_kg` agree in meaning.
- ``cloud_usd_low`` / ``cloud_usd_high`` = ``device_hours`` x the rental price range of the
  device type. A rental price already covers power and cooling: add electricity OR cloud cost,
  never both.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import load_yaml
from .errors import UserError, check_keys

PRICE_TABLE = "prices.yaml"
WILDCARD = "*"  # a preset's device entry that applies to every device type
DEVICE_KEYS = ("usd_per_hour_low", "usd_per_hour_high", "power_w")
PRESET_KEYS = ("description", "electricity_usd_per_kwh", "pue", "carbon_intensity_kg_per_kwh", "devices")
FALLBACK_GPU, FALLBACK_CPU = "gpu", "cpu"
# Words that mark a device name as a GPU when no device type matched it.
_GPU_WORDS = re.compile(r"nvidia|tesla|geforce|quadro|radeon|instinct|\brtx\b|\bgpu\b|cuda|\bmi\d{2,3}", re.I)


@dataclass(frozen=True)
class DevicePrice:
    """Prices of one device type: $/device-hour (low, high) and the power draw in W."""

    usd_per_hour_low: float
    usd_per_hour_high: float
    power_w: float


@dataclass
class CostModel:
    """Prices of one preset of a price table; see the module docstring for the conventions.

    Build with :meth:`from_yaml`. All numbers are non-negative; ``pue >= 1``.
    """

    preset: str
    electricity_usd_per_kwh: float
    pue: float
    carbon_intensity_kg_per_kwh: float
    devices: dict[str, DevicePrice]
    device_patterns: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_yaml(cls, path: str | Path | None = None, preset: str = "default",
                  overrides: Mapping[str, Any] | None = None) -> "CostModel":
        """Load ``preset`` from the packaged ``prices.yaml``, merged with a user table and overrides.

        Args:
            path: optional user YAML in the same format; deep-merged over the packaged table,
                so it may change a few numbers, add a device type or add a preset.
            preset: name of a preset (``default``, ``paper-2024``, or one from ``path``).
            overrides: numbers that win over the preset, either nested
                (``{"pue": 1.1, "devices": {"H100": {"usd_per_hour_low": 1.5}}}``) or dotted
                (``{"devices.H100.usd_per_hour_low": 1.5}``).
        Raises:
            UserError: unknown preset / device type / key, a negative or non-numeric price,
                ``pue < 1``, or ``usd_per_hour_low > usd_per_hour_high``.
        """
        table = load_price_table(path)
        presets = table.get("presets") or {}
        if preset not in presets:
            raise UserError(f"unknown price preset {preset!r}; valid: {', '.join(presets)}")
        data = copy.deepcopy(presets[preset])
        if overrides:
            data = _deep_merge(data, _undot(overrides), where="price override")
        patterns = {str(k): [str(p) for p in (v or [])] for k, v in (table.get("device_types") or {}).items()}
        return cls._from_preset(preset, data, patterns)

    @classmethod
    def _from_preset(cls, name: str, data: Mapping[str, Any], patterns: dict[str, list[str]]) -> "CostModel":
        check_keys(data, PRESET_KEYS, f"price preset {name!r}")
        for key in PRESET_KEYS[1:]:
            if key not in data:
                raise UserError(f"price preset {name!r} lacks {key!r}")
        pue = _number(data["pue"], f"pue of preset {name!r}")
        if pue < 1:
            raise UserError(f"invalid pue {pue!r} in price preset {name!r}: must be >= 1")
        known = list(patterns)
        devices_in = data["devices"] or {}
        if not isinstance(devices_in, Mapping):
            raise UserError(f"devices of price preset {name!r} must be a mapping of device type to prices")
        wildcard = devices_in.get(WILDCARD)
        for dev in devices_in:
            if dev != WILDCARD and dev not in known:
                raise UserError(f"unknown device type {dev!r} in price preset {name!r}; valid: {', '.join(known)}"
                                f" (add new types under device_types)")
        devices = {}
        for dev in known:
            entry = devices_in.get(dev)
            if entry is None and wildcard is None:
                continue  # this preset does not price this device type
            merged = {**(wildcard or {}), **(entry or {})}
            devices[dev] = _device_price(merged, f"{dev} in price preset {name!r}")
        return cls(preset=name, electricity_usd_per_kwh=_number(data["electricity_usd_per_kwh"],
                                                                f"electricity_usd_per_kwh of preset {name!r}"),
                   pue=pue,
                   carbon_intensity_kg_per_kwh=_number(data["carbon_intensity_kg_per_kwh"],
                                                       f"carbon_intensity_kg_per_kwh of preset {name!r}"),
                   devices=devices, device_patterns=patterns, description=str(data.get("description") or ""))

    # ------------------------------------------------------------------ lookups
    @property
    def device_types(self) -> list[str]:
        """Device types this preset prices, in table order."""
        return list(self.devices)

    def price(self, device_type: str) -> DevicePrice:
        """Prices of ``device_type``; UserError listing the valid types if it is unknown."""
        if device_type not in self.devices:
            raise UserError(f"unknown device type {device_type!r} in price preset {self.preset!r}; "
                            f"valid: {', '.join(self.devices)}")
        return self.devices[device_type]

    def device_type_for(self, device_name: str | None) -> str:
        """Map a detected device name to a device type of the table.

        ``"NVIDIA H100 80GB HBM3"`` -> ``"H100"``, ``"NVIDIA A100-SXM4-40GB"`` -> ``"A100-40GB"``,
        ``"AMD EPYC 7B13"`` -> ``"cpu"``. The patterns come from ``device_types`` in the table
        (first match wins); an unmatched name falls back to ``"gpu"`` if it looks like a GPU
        (NVIDIA/Tesla/GeForce/Radeon/...) and to ``"cpu"`` otherwise.
        """
        name = str(device_name or "")
        for dev, pats in self.device_patterns.items():
            if any(re.search(p, name, flags=re.I) for p in pats):
                return dev
        return FALLBACK_GPU if _GPU_WORDS.search(name) else FALLBACK_CPU

    # ------------------------------------------------------------------ arithmetic
    def cost(self, device_type: str, device_hours: float, energy_kwh: float | None) -> dict[str, float | None]:
        """Dollar cost of ``device_hours`` on ``device_type`` that drew ``energy_kwh`` (IT energy).

        Returns ``electricity_usd`` (= energy_kwh x pue x $/kWh; None when energy_kwh is None),
        ``cloud_usd_low`` and ``cloud_usd_high`` (= device_hours x $/device-hour).
        """
        price = self.price(device_type)
        device_hours = _number(device_hours, "device_hours")
        electricity = None
        if energy_kwh is not None:
            electricity = _number(energy_kwh, "energy_kwh") * self.pue * self.electricity_usd_per_kwh
        return {"electricity_usd": electricity,
                "cloud_usd_low": device_hours * price.usd_per_hour_low,
                "cloud_usd_high": device_hours * price.usd_per_hour_high}

    def estimate_energy_kwh(self, device_type: str, device_hours: float, include_pue: bool = False) -> float:
        """Energy estimate when none was measured: ``power_w x device_hours / 1000`` (IT energy).

        ``include_pue=True`` returns facility energy (x pue), the 2024 study's
        ``300 W x GPUs x hours x 1.58``. Pass the default (IT energy) to :meth:`cost`, which
        applies PUE itself; passing facility energy there would apply PUE twice.
        """
        kwh = self.price(device_type).power_w * _number(device_hours, "device_hours") / 1000.0
        return kwh * self.pue if include_pue else kwh

    def emissions_kg(self, energy_kwh: float | None) -> float | None:
        """kg CO2e of ``energy_kwh`` of IT energy at the preset's grid carbon intensity (no PUE)."""
        if energy_kwh is None:
            return None
        return _number(energy_kwh, "energy_kwh") * self.carbon_intensity_kg_per_kwh

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "description": self.description,
                "electricity_usd_per_kwh": self.electricity_usd_per_kwh, "pue": self.pue,
                "carbon_intensity_kg_per_kwh": self.carbon_intensity_kg_per_kwh,
                "devices": {k: vars(v).copy() for k, v in self.devices.items()}}


# ---------------------------------------------------------------------- default speeds
THROUGHPUT_TABLE = "throughput.yaml"


def default_flop_rate(device_type: str | None) -> tuple[float, str, str] | None:
    """``(FLOP/s, entry, source)`` of ``device_type`` in the packaged throughput.yaml (its own entry, else its
    kind's: ``gpu`` for any GPU type, ``cpu``), or None if neither is listed."""
    table = yaml.safe_load(_table(THROUGHPUT_TABLE).read_text())
    devices = table.get("devices") or {}
    kind = "cpu" if device_type in (None, "cpu") else "gpu"
    entry = device_type if device_type in devices else kind
    if entry not in devices:
        return None
    return float(devices[entry]["flops_per_second"]), entry, " ".join(str(devices[entry]["source"]).split())


# ---------------------------------------------------------------------- table loading
def _table(name: str):
    """A packaged table in ``compute/``, found through ``robustscale`` (``resources.files("robustscale.compute")``
    would import that package, and torch with it)."""
    return resources.files("robustscale") / "compute" / name


def load_price_table(path: str | Path | None = None) -> dict[str, Any]:
    """The packaged price table, deep-merged with the user table at ``path`` if given."""
    text = _table(PRICE_TABLE).read_text()
    table = yaml.safe_load(text)
    if path is not None:
        user = load_yaml(path)  # UserError for a missing file or bad YAML
        for key in user:
            if key not in ("device_types", "presets"):
                raise UserError(f"unknown key {key!r} in price table {path}; valid: device_types, presets")
        user = copy.deepcopy(user)
        # New device types go first so that a user's pattern can shadow a packaged one.
        if user.get("device_types"):
            types = dict(user.pop("device_types"))
            for k, v in table["device_types"].items():
                types.setdefault(k, v)
            table["device_types"] = types
        table = _deep_merge(table, user, where=f"price table {path}", allow_new=True)
    return table


def _deep_merge(base: dict, new: Mapping, where: str, allow_new: bool = False, prefix: str = "") -> dict:
    out = dict(base)
    for key, value in new.items():
        name = f"{prefix}{key}"
        if key not in out and not allow_new and not prefix.startswith("devices."):  # new device types are fine
            valid = ", ".join(str(k) for k in base)
            raise UserError(f"unknown key {name!r} in {where}; valid: {valid}")
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value, where, allow_new, prefix=f"{name}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _undot(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"devices.H100.power_w": 500}`` -> ``{"devices": {"H100": {"power_w": 500}}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".") if str(key).startswith("devices.") else [str(key)]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), Mapping):
            node[parts[-1]] = _deep_merge(node[parts[-1]], value, "override", allow_new=True)
        else:
            node[parts[-1]] = value
    return out


def _device_price(entry: Mapping[str, Any], what: str) -> DevicePrice:
    for key in entry:
        if key not in DEVICE_KEYS:
            raise UserError(f"unknown key {key!r} for {what}; valid: {', '.join(DEVICE_KEYS)}")
    for key in DEVICE_KEYS:
        if key not in entry:
            raise UserError(f"{what} lacks {key!r}")
    low = _number(entry["usd_per_hour_low"], f"usd_per_hour_low of {what}")
    high = _number(entry["usd_per_hour_high"], f"usd_per_hour_high of {what}")
    if low > high:
        raise UserError(f"invalid prices for {what}: usd_per_hour_low {low} > usd_per_hour_high {high}")
    return DevicePrice(low, high, _number(entry["power_w"], f"power_w of {what}"))


def _number(value: Any, what: str) -> float:
    """A finite, non-negative float or a one-line UserError naming ``what``."""
    if isinstance(value, bool):
        raise UserError(f"invalid {what} {value!r}: expected a non-negative number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"invalid {what} {value!r}: expected a non-negative number") from None
    if not math.isfinite(number) or number < 0:
        raise UserError(f"invalid {what} {value!r}: must be a finite number >= 0")
    return number
