"""Believable values for every simulated device at time ``t``: pure and vectorised.

Each method takes an epoch time and returns ``{metric: array}`` with one entry per device
of the kind (in :class:`~server.simulate.fleet.KindGroup` order). Nothing here keeps state
between calls: instantaneous values are daily profiles times per-device constants plus
counter-based noise (:mod:`server.simulate.rand`), and counters (``energy_kwh``,
``volume_m3``, ``burning_hours``) are closed-form integrals of the same profiles since
:data:`~server.simulate.sun.EPOCH`. So the same ``(seed, t)`` always gives the same
numbers, a restart never makes a counter go backwards, and tests can ask for 22:00 local
without waiting for it. Noise is left out of the integrals (it averages out).

Local time is the city's (default Asia/Ho_Chi_Minh, UTC+7, no DST). Profiles:

* streetlights: on from sunset to sunrise (astral, ± 5 min photocell spread per lamp),
  100 % in the evening, 50 % from 00:00 to 05:00 (the usual Vietnamese dimming schedule;
  sunrise at 21.6° N is never before 05:13, so the dimmed hours lie inside every night);
* water demand: night minimum 02-04, morning peak 06-08, evening peak 18-21;
* road traffic: peaks 07-08 and 17-18; air quality and noise follow it;
* air temperature 18-30 °C, coolest at dawn, warmest mid-afternoon.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np

from server.simulate.fleet import Fleet, KindGroup
from server.simulate.rand import between, device_keys, normal, uniform
from server.simulate.sun import NightTable

DEFAULT_TZ = "Asia/Ho_Chi_Minh"

BOOL_METRICS = frozenset({"lamp_on", "lamp_fault", "driver_fault", "breaker_tripped",
                          "door_open", "online", "recording"})
#: Decimals a real device would send; integers are sent as JSON integers.
DECIMALS = {
    "dim_level_pct": 0, "power_w": 1, "energy_kwh": 3, "burning_hours": 2,
    "voltage_l1_v": 1, "voltage_l2_v": 1, "voltage_l3_v": 1, "current_l1_a": 3,
    "current_l2_a": 3, "current_l3_a": 3, "power_factor": 3, "frequency_hz": 2,
    "energy_import_kwh": 2, "volume_m3": 3, "flow_m3h": 3, "battery_pct": 0,
    "pressure_bar": 3, "temperature_c": 1, "mode": 0, "plan": 0, "detector_faults": 0,
    "volume_vph": 0, "occupancy_pct": 1, "speed_kmh": 1, "flow_vph": 0,
    "congestion_level": 0, "pm25_ugm3": 1, "pm10_ugm3": 1, "no2_ppb": 1, "noise_dba": 1,
    "humidity_pct": 1,
}

# Hourly knots (index = local hour); np.interp joins them linearly, wrapping at 24.
_WATER = np.array([0.45, 0.32, 0.22, 0.22, 0.32, 0.8, 1.6, 1.9, 1.55, 1.1, 1.0, 1.1,
                   1.2, 1.0, 0.9, 0.9, 1.0, 1.3, 1.65, 1.8, 1.65, 1.3, 0.9, 0.65])
_TRAFFIC = np.array([0.08, 0.05, 0.04, 0.04, 0.07, 0.2, 0.55, 0.95, 0.85, 0.6, 0.55, 0.6,
                     0.55, 0.5, 0.55, 0.65, 0.85, 1.0, 0.9, 0.65, 0.5, 0.4, 0.25, 0.14])
_HOURS = np.arange(25)


def _profile(knots: np.ndarray, hour: float | np.ndarray) -> np.ndarray:
    return np.interp(hour, _HOURS, np.append(knots, knots[0]))


def _normalised_water() -> tuple[np.ndarray, np.ndarray]:
    minutes = np.arange(24 * 60 + 1) / 60
    curve = _profile(_WATER, minutes)
    cum = np.concatenate([[0.0], np.cumsum((curve[1:] + curve[:-1]) / 2) / 60])
    scale = 24.0 / cum[-1]  # mean demand 1.0: base flow × 24 h is a day's volume
    return _WATER * scale, cum * scale


_WATER_KNOTS, _WATER_CUM = _normalised_water()
_WATER_CUM_X = np.arange(24 * 60 + 1) / 60
_DIMMED_S = 5 * 3600  # 00:00-05:00 at 50 %
# Traffic signal timing plans by hour: 1 night, 2 AM peak, 3 off-peak, 4 PM peak, 5 evening.
_PLANS = np.array([1] * 6 + [2] * 3 + [3] * 7 + [4] * 3 + [5] * 3 + [1] * 2)


def water_demand(hour: float) -> float:
    """Relative water demand at a local hour (mean 1.0 over the day)."""
    return float(_profile(_WATER_KNOTS, hour))


def traffic_level(hour: float) -> float:
    """Relative road traffic at a local hour (1.0 at the evening peak)."""
    return float(_profile(_TRAFFIC, hour))


class Patterns:
    """Per-device constants for one fleet and seed; values at any time from them."""

    def __init__(self, fleet: Fleet, seed: int = 42, tz: str = DEFAULT_TZ) -> None:
        self.fleet = fleet
        self.seed = seed
        self.tz = ZoneInfo(tz)
        self.sun = NightTable(*fleet.centre, self.tz)
        self._keys = {k: device_keys(g.ids, seed) for k, g in fleet.groups.items()}
        self._epoch_ts = self.sun.midnight(0)

    def _g(self, kind: str) -> tuple[KindGroup, np.ndarray]:
        return self.fleet.groups[kind], self._keys[kind]

    def local(self, t: float) -> tuple[int, float]:
        """(local day index since EPOCH, local hour of day as a float)."""
        k = self.sun.day_index(t)
        return k, (t - self.sun.midnight(k)) / 3600.0

    def values(self, kind: str, t: float, lamps: dict | None = None) -> dict[str, np.ndarray]:
        if kind == "lighting_cabinet":
            return self.lighting_cabinet(t, lamps if lamps is not None else self.streetlight(t))
        return getattr(self, kind)(t)

    # ------------------------------------------------------------------ lighting
    def streetlight(self, t: float) -> dict[str, np.ndarray]:
        g, keys = self._g("streetlight")
        tick = int(t)
        rated = g.prop("rated_power_w", 100.0)
        early, late = between(keys, 1, -300, 300), between(keys, 2, -300, 300)
        k = self.sun.day_index(t)
        midnight = self.sun.midnight(k)
        rise = self.sun.sunrise(k) + late
        set_today = self.sun.sunset(k) + early
        set_yesterday = self.sun.sunset(k - 1) + early
        morning = t < rise
        evening = t >= set_today
        on = morning | evening
        dim = np.where(on, np.where(t - midnight < _DIMMED_S, 50.0, 100.0), 0.0)
        power = np.where(on, rated * dim / 100 * (1 + 0.015 * normal(keys, 3, tick)), 0.0)
        # Whole nights before now, then the part of the current one.
        span = late - early
        nights = np.where(morning, k - 1, k)
        done = np.where(morning, self.sun.nights_before(k - 1), self.sun.nights_before(k))
        done = done + nights * span
        partial = np.where(morning, t - set_yesterday, np.where(evening, t - set_today, 0.0))
        on_s = done + partial
        dimmed = nights * _DIMMED_S + np.where(
            morning, np.clip(min(t, midnight + _DIMMED_S) - midnight, 0, None), 0.0)
        burn0 = between(keys, 4, 200, 9000)  # hours before EPOCH: lamps of different ages
        full_s = on_s - 0.5 * dimmed
        return {
            "lamp_on": on,
            "dim_level_pct": dim,
            "power_w": power,
            "energy_kwh": rated / 1000 * (burn0 * 0.8 + full_s / 3600),
            "burning_hours": burn0 + on_s / 3600,
            "lamp_fault": np.zeros(len(g), dtype=bool),
            "driver_fault": np.zeros(len(g), dtype=bool),
        }

    def lighting_cabinet(self, t: float, lamps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """An Eastron SDM630 at the cabinet feeding its lamps, spread over three phases;
        ``lamps`` are the streetlight values after faults, so a dead lamp lowers the load."""
        g, keys = self._g("lighting_cabinet")
        n, tick = len(g), int(t)
        link = self.fleet.lamp_cabinet
        fed = link >= 0
        phase = np.arange(len(link)) % 3
        slot = link[fed] * 3 + phase[fed]
        load = np.bincount(slot, weights=lamps["power_w"][fed], minlength=3 * n).reshape(n, 3)
        load[:, 0] += 12.0  # controller, contactor coils, door light: upstream of the breaker
        volts = np.stack([230.0 + 1.2 * normal(keys, 10 + p, tick) - load[:, p] / 2000
                          for p in range(3)], axis=1)
        total = load.sum(axis=1)
        pf = np.where(total > 50, np.clip(0.95 + 0.008 * normal(keys, 13, tick), 0.9, 0.99),
                      1.0)
        amps = load / (volts * pf[:, None])
        energy = np.bincount(link[fed], weights=lamps["energy_kwh"][fed], minlength=n)
        return {
            **{f"voltage_l{p + 1}_v": volts[:, p] for p in range(3)},
            **{f"current_l{p + 1}_a": amps[:, p] for p in range(3)},
            "power_w": total,
            "power_factor": pf,
            "frequency_hz": 50.0 + 0.02 * normal(keys, 14, tick),
            "energy_import_kwh": energy + between(keys, 15, 10, 500),
            "breaker_tripped": np.zeros(n, dtype=bool),
            "door_open": np.zeros(n, dtype=bool),
        }

    # ------------------------------------------------------------------ water
    def _water_volume(self, t: float, base: np.ndarray) -> np.ndarray:
        k, hour = self.local(t)
        return base * (24.0 * k + np.interp(hour, _WATER_CUM_X, _WATER_CUM))

    def water_meter(self, t: float) -> dict[str, np.ndarray]:
        _, keys = self._g("water_meter")
        _, hour = self.local(t)
        base = between(keys, 20, 0.012, 0.06)  # m³/h: 0.3-1.4 m³ a day, households
        flow = base * water_demand(hour) * (1 + 0.12 * normal(keys, 21, int(t)))
        years = max(0.0, t - self._epoch_ts) / (365.25 * 86400)
        return {
            "flow_m3h": np.clip(flow, 0, None),
            "volume_m3": between(keys, 22, 40, 900) + self._water_volume(t, base),
            "battery_pct": np.clip(between(keys, 23, 88, 97) - 3.5 * years, 5, 100).round(),
        }

    def pressure_sensor(self, t: float) -> dict[str, np.ndarray]:
        _, keys = self._g("pressure_sensor")
        _, hour = self.local(t)
        tick = int(t)
        # Pressure falls as demand rises (head loss ~ flow²; linear is close enough here).
        dip = 0.33 * (water_demand(hour) - 1.0)
        water_t = 26.0 + 1.5 * np.cos(2 * np.pi * (hour - 16) / 24)
        return {
            "pressure_bar": between(keys, 30, 2.7, 3.3) - dip + 0.012 * normal(keys, 31, tick),
            "temperature_c": water_t + between(keys, 32, -0.8, 0.8)
            + 0.05 * normal(keys, 33, tick),
        }

    def flow_meter(self, t: float) -> dict[str, np.ndarray]:
        g, keys = self._g("flow_meter")
        _, hour = self.local(t)
        base = g.prop("nominal_flow_m3h", 0.0)
        base = np.where(base > 0, base, between(keys, 40, 40, 250))
        flow = base * water_demand(hour) * (1 + 0.03 * normal(keys, 41, int(t)))
        return {
            "flow_m3h": np.clip(flow, 0, None),
            "volume_m3": between(keys, 42, 1e4, 5e5) + self._water_volume(t, base),
        }

    # ------------------------------------------------------------------ roads
    def traffic_controller(self, t: float) -> dict[str, np.ndarray]:
        g, keys = self._g("traffic_controller")
        _, hour = self.local(t)
        n, tick = len(g), int(t)
        peak = between(keys, 50, 900, 1800)
        vol = np.clip(peak * traffic_level(hour) * (1 + 0.08 * normal(keys, 51, tick)), 0, None)
        occ = np.clip(vol / peak * 35 + 1.5 + 0.8 * normal(keys, 52, tick), 0, 95)
        day = 6.0 <= hour < 22.0
        return {
            "mode": np.full(n, 7.0 if day else 8.0),  # NTCIP: 7 coordinated, 8 free
            "plan": np.full(n, float(_PLANS[int(hour) % 24])),
            "detector_faults": np.zeros(n),
            "volume_vph": vol,
            "occupancy_pct": occ,
        }

    def road_segment(self, t: float) -> dict[str, np.ndarray]:
        g, keys = self._g("road_segment")
        _, hour = self.local(t)
        tick = int(t)
        capacity = 900.0 * g.prop("lanes", 2)
        free = g.prop("speed_limit_kmh", 0) + g.prop("maxspeed", 0)
        free = np.where(free > 0, free, 50.0)
        demand = between(keys, 60, 0.45, 1.05) * traffic_level(hour)
        ratio = np.clip(demand * (1 + 0.06 * normal(keys, 61, tick)), 0, 1.2)
        # Speed-flow curve in the BPR form with an urban exponent: near capacity, speeds fall.
        speed = free / (1 + (ratio / 0.85) ** 4) * (1 + 0.03 * normal(keys, 62, tick))
        return {
            "speed_kmh": np.clip(speed, 3, None),
            "flow_vph": capacity * np.minimum(ratio, 1.0),
            "congestion_level": np.digitize(ratio, [0.5, 0.7, 0.85, 0.95]).astype(float),
        }

    # ------------------------------------------------------------------ environment
    def env_sensor(self, t: float) -> dict[str, np.ndarray]:
        _, keys = self._g("env_sensor")
        _, hour = self.local(t)
        tick = int(t)
        traffic = traffic_level(hour)
        site = between(keys, 70, 0.7, 1.4)  # kerbside stations see more than parks
        pm25 = (14 + 32 * traffic) * site * (1 + 0.1 * normal(keys, 71, tick))
        warm = np.cos(2 * np.pi * (hour - 14.5) / 24)  # 1 mid-afternoon, -1 before dawn
        temp = 24 + 6 * warm + between(keys, 75, -0.6, 0.6) + 0.15 * normal(keys, 76, tick)
        return {
            "pm25_ugm3": np.clip(pm25, 1, None),
            "pm10_ugm3": np.clip(pm25 * between(keys, 72, 1.4, 1.9), 2, None),
            "no2_ppb": np.clip((7 + 28 * traffic) * site * (1 + 0.1 * normal(keys, 73, tick)),
                               0.5, None),
            "noise_dba": 47 + 21 * traffic + 4 * (site - 1) + 1.5 * normal(keys, 74, tick),
            "temperature_c": temp,
            "humidity_pct": np.clip(74 - 16 * warm + 2 * normal(keys, 77, tick), 30, 100),
        }

    def camera(self, t: float) -> dict[str, np.ndarray]:
        _, keys = self._g("camera")
        online = uniform(keys, 80) >= 0.03  # a few cameras are always down for maintenance
        return {"online": online, "recording": online.copy()}

