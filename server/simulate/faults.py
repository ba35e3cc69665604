"""Fault injection: on a seeded schedule and on request, each fault clearing after a while.

Faults are overlays: :meth:`FaultBook.apply` edits the values the patterns produced, so a
cleared fault leaves no trace and the patterns stay pure. The kinds, and what the server
should see:

``lamp_fault``        a lamp fails: ``lamp_fault`` true, ``lamp_on`` false, ``power_w`` 0.
``cabinet_trip``      a cabinet's breaker trips: ``breaker_tripped`` true on the cabinet
                      (its I/O module) and its meter's currents fall to ~0; EVERY lamp it
                      feeds reports ``lamp_on`` false, ``power_w`` 0 and ``lamp_fault`` true.
                      Choice: the lamps' nodes keep reporting (LoRaWAN/NB-IoT nodes have a
                      supercap "last gasp" and report loss of mains as a lamp fault), which
                      is what the ``feeder-dark`` topology rule groups into one incident.
``door_open``         a cabinet door opens (``door_open`` true).
``main_burst``        a main bursts at a point: pressure sensors within 500 m lose 1.0-1.5
                      bar (more when closer), ramping over 60 s; flow meters within 2 km
                      see up to +80 m³/h. Target: a device id (its position) or (lon, lat).
``sensor_nan``        a pressure transmitter's channel fails: it reads NaN. Over Modbus the
                      registers hold a NaN float, as a real Keller does (JSON has no NaN, so
                      an MQTT device would leave the metric out instead).
``silent``            a device stops reporting (MQTT: no telemetry, and ``offline`` on its
                      retained status as its last will would; water meters, which would be
                      LoRaWAN, just go quiet. Modbus: the gateway answers exception 0x0B).
``controller_flash``  a traffic controller falls into flash (``mode`` 3).
``day_burner``        a lamp stays on at 100 % in daylight (a stuck contactor or relay).

Counters (``energy_kwh``, ``burning_hours``, ``energy_import_kwh``, ``volume_m3`` of
meters) keep following the patterns through a fault, except the water a burst loses
through flow meters: the patterns' counters are closed-form in time, and keeping them so
(monotonic across restarts) is worth a few kWh a dark lamp did not really use.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field

import numpy as np

from server.simulate.fleet import Fleet

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FaultKind:
    target: str | None  # the device kind it hits; None: any simulated device
    duration_s: float
    weight: int  # relative frequency on the schedule


FAULT_KINDS: dict[str, FaultKind] = {
    "lamp_fault": FaultKind("streetlight", 1200, 30),
    "cabinet_trip": FaultKind("lighting_cabinet", 600, 8),
    "door_open": FaultKind("lighting_cabinet", 300, 8),
    "main_burst": FaultKind("pressure_sensor", 900, 6),
    "sensor_nan": FaultKind("pressure_sensor", 600, 10),
    "silent": FaultKind(None, 1200, 14),
    "controller_flash": FaultKind("traffic_controller", 300, 8),
    "day_burner": FaultKind("streetlight", 1800, 8),
}

BURST_PRESSURE_RADIUS_M = 500.0
BURST_FLOW_RADIUS_M = 2000.0
BURST_RAMP_S = 60.0


@dataclass(slots=True)
class Fault:
    id: int
    kind: str
    device: str | None
    start: float
    end: float
    #: affected device indices per device kind
    members: dict[str, np.ndarray] = field(default_factory=dict)
    #: per-member magnitude (bar dropped, m³/h added) for main_burst
    size: dict[str, np.ndarray] = field(default_factory=dict)
    point: tuple[float, float] | None = None

    @property
    def where(self) -> str:
        """The device, or the point as a log line shows it (lon, lat to about a metre)."""
        if self.device or self.point is None:
            return str(self.device)
        return f"{self.point[0]:.5f},{self.point[1]:.5f}"

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "device": self.device, "start": self.start,
                "end": self.end, "point": self.point,
                "devices": {k: len(v) for k, v in self.members.items()}}


class FaultBook:
    """Active faults, the seeded schedule, and the overlay they put on values."""

    def __init__(self, fleet: Fleet, seed: int = 42, *, interval_s: float | None = 180.0,
                 durations: dict[str, float] | None = None, first_within_s: float = 30.0) -> None:
        self.fleet = fleet
        self.interval_s = interval_s  # mean seconds between scheduled faults; None: off
        # The first scheduled fault comes at most this soon after start, so whoever starts
        # the demo sees an alarm arrive within a minute rather than after a random wait
        # (3 minutes on average, more than 5 one time in five).
        self.first_within_s = first_within_s
        self.durations = {k: v.duration_s for k, v in FAULT_KINDS.items()} | (durations or {})
        self._schedule_rng = random.Random(seed)
        self._request_rng = random.Random(seed ^ 0x5EED)
        self._next_at: float | None = None
        self._ids = itertools.count(1)
        self.active: list[Fault] = []
        #: bumped on every start and end, so cached values are recomputed
        self.version = 0
        #: (kind, index) of devices whose state a fault changed: report them now, not at
        #: their next interval (real devices send an uplink on an alarm).
        self.changed: set[tuple[str, int]] = set()
        lamps = fleet.groups.get("streetlight")
        self._rated = lamps.prop("rated_power_w", 100.0) if lamps else np.zeros(0)

    # ------------------------------------------------------------------ lifecycle
    def advance(self, now: float) -> None:
        """Expire finished faults and start the scheduled ones that are due."""
        for f in [f for f in self.active if f.end <= now]:
            self._end(f, "cleared")
        if self.interval_s is None:
            return
        if self._next_at is None:
            self._next_at = now + min(self._schedule_rng.expovariate(1 / self.interval_s),
                                      self.first_within_s)
        while now >= self._next_at:
            kinds = [k for k, v in FAULT_KINDS.items() if self._candidates(v.target)]
            if kinds:
                kind = self._schedule_rng.choices(
                    kinds, weights=[FAULT_KINDS[k].weight for k in kinds])[0]
                self._start(kind, None, self._next_at, None, self._schedule_rng)
            self._next_at += self._schedule_rng.expovariate(1 / self.interval_s)

    def inject(self, kind: str, target: str | tuple[float, float] | None = None, *,
               now: float, duration_s: float | None = None) -> Fault:
        """Start a fault now. ``target``: a device id, (lon, lat) for ``main_burst``, or
        None for a random device of the right kind (drawn from the seeded stream)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        return self._start(kind, target, now, duration_s, self._request_rng)

    def clear(self, fault_id: int | None = None) -> int:
        """End one fault (or all of them); returns how many ended."""
        ended = [f for f in self.active if fault_id is None or f.id == fault_id]
        for f in ended:
            self._end(f, "cleared on request")
        return len(ended)

    def _candidates(self, target: str | None) -> list[tuple[str, int]]:
        kinds = [target] if target else list(self.fleet.groups)
        return [(k, i) for k in kinds if k in self.fleet.groups
                for i in range(len(self.fleet.groups[k]))]

    def _start(self, kind: str, target, now: float, duration_s: float | None,
               rng: random.Random) -> Fault:
        spec = FAULT_KINDS[kind]
        fault = Fault(next(self._ids), kind, None, now,
                      now + (duration_s if duration_s is not None else self.durations[kind]))
        if kind == "main_burst":
            self._burst(fault, target, rng)
        else:
            if target is None:
                pool = self._candidates(spec.target)
                if not pool:
                    raise LookupError(f"no {spec.target or 'simulated'} device for {kind}")
                dkind, idx = rng.choice(pool)
            else:
                dkind, idx = self.fleet.locate(str(target))
                if spec.target and dkind != spec.target:
                    raise ValueError(f"{kind} needs a {spec.target}, {target} is a {dkind}")
            fault.device = self.fleet.groups[dkind].ids[idx]
            fault.members[dkind] = np.array([idx])
            if kind == "cabinet_trip":
                fault.members["streetlight"] = np.flatnonzero(self.fleet.lamp_cabinet == idx)
        self.active.append(fault)
        self._touch(fault)
        logger.info("fault %d %s started on %s until +%ds", fault.id, kind, fault.where,
                    fault.end - now)
        return fault

    def _burst(self, fault: Fault, target, rng: random.Random) -> None:
        if isinstance(target, tuple | list):
            lon, lat = float(target[0]), float(target[1])
        elif target is not None:
            dkind, idx = self.fleet.locate(str(target))
            g = self.fleet.groups[dkind]
            lon, lat, fault.device = float(g.lon[idx]), float(g.lat[idx]), g.ids[idx]
        else:
            g = self.fleet.groups.get("pressure_sensor")
            if g is None:
                raise LookupError("no pressure sensor to burst a main near")
            idx = rng.randrange(len(g))
            # A burst is rarely right under a sensor: 50-200 m away from one.
            bearing, dist = rng.uniform(0, 2 * np.pi), rng.uniform(50, 200)
            lat = float(g.lat[idx]) + dist * np.sin(bearing) / 111_320
            lon = float(g.lon[idx]) + dist * np.cos(bearing) / (111_320 * np.cos(np.radians(lat)))
        fault.point = (float(lon), float(lat))  # np.sin made them numpy scalars
        d = self.fleet.distances_m("pressure_sensor", lon, lat)
        near = np.flatnonzero(d <= BURST_PRESSURE_RADIUS_M)
        fault.members["pressure_sensor"] = near
        fault.size["pressure_sensor"] = 1.0 + 0.5 * (1 - d[near] / BURST_PRESSURE_RADIUS_M)
        d = self.fleet.distances_m("flow_meter", lon, lat)
        near = np.flatnonzero(d <= BURST_FLOW_RADIUS_M)
        fault.members["flow_meter"] = near
        fault.size["flow_meter"] = 20.0 + 60.0 * (1 - d[near] / BURST_FLOW_RADIUS_M)

    def _end(self, fault: Fault, why: str) -> None:
        self.active.remove(fault)
        self._touch(fault)
        logger.info("fault %d %s on %s %s", fault.id, fault.kind, fault.where, why)

    def _touch(self, fault: Fault) -> None:
        self.version += 1
        for kind, idx in fault.members.items():
            self.changed.update((kind, int(i)) for i in idx)

    # ------------------------------------------------------------------ overlay
    def silent_mask(self, kind: str, n: int) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        for f in self.active:
            if f.kind == "silent" and kind in f.members:
                mask[f.members[kind]] = True
        return mask

    def apply(self, kind: str, t: float, values: dict[str, np.ndarray]) -> None:
        """Put every active fault touching ``kind`` onto ``values`` (edited in place)."""
        for f in self.active:
            idx = f.members.get(kind)
            if idx is None or not len(idx) or f.kind == "silent":
                continue
            if kind == "streetlight" and f.kind in ("lamp_fault", "cabinet_trip"):
                values["lamp_on"][idx] = False
                values["power_w"][idx] = 0.0
                values["lamp_fault"][idx] = True
            elif kind == "streetlight" and f.kind == "day_burner":
                values["lamp_on"][idx] = True
                values["dim_level_pct"][idx] = 100.0
                values["power_w"][idx] = self._rated[idx]
            elif kind == "lighting_cabinet" and f.kind == "cabinet_trip":
                values["breaker_tripped"][idx] = True
            elif kind == "lighting_cabinet" and f.kind == "door_open":
                values["door_open"][idx] = True
            elif kind == "pressure_sensor" and f.kind == "sensor_nan":
                values["pressure_bar"][idx] = np.nan
            elif f.kind == "main_burst":
                ramp = min(1.0, max(0.0, (t - f.start) / BURST_RAMP_S))
                if kind == "pressure_sensor":
                    values["pressure_bar"][idx] -= f.size[kind] * ramp
                elif kind == "flow_meter":
                    values["flow_m3h"][idx] += f.size[kind] * ramp
                    # ∫ ramp dt: a triangle for the first minute, then a rectangle
                    el = max(0.0, t - f.start)
                    lost_h = (el * el / (2 * BURST_RAMP_S) if el < BURST_RAMP_S
                              else el - BURST_RAMP_S / 2) / 3600
                    values["volume_m3"][idx] += f.size[kind] * lost_h
            elif kind == "traffic_controller" and f.kind == "controller_flash":
                values["mode"][idx] = 3.0
