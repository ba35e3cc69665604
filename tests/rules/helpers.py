"""A small device table and metric catalogue for the pure rule tests."""

from __future__ import annotations

import numpy as np

from rules.devices import DeviceRow, DeviceTable
from rules.engine import RuleEngine
from rules.evaluator import Batch, MetricInfo
from rules.models import parse_rule

METRICS = {
    "pressure_bar": MetricInfo(1, False),
    "lamp_on": MetricInfo(2, True),
    "lamp_fault": MetricInfo(3, True),
    "mode": MetricInfo(4, False),
    "power_w": MetricInfo(5, False),
}

T0 = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC


def table(n_lamps: int = 6, n_sensors: int = 4) -> DeviceTable:
    rows = [DeviceRow(1, "CAB-1", "lighting_cabinet", 105.80, 21.50, interval_s=10)]
    rows += [DeviceRow(10 + i, f"SL-{i}", "streetlight", 105.80 + i * 0.0003, 21.50,
                       parent="CAB-1", interval_s=300) for i in range(n_lamps)]
    # Sensors 300 m apart along a line (0.0029° of longitude ≈ 300 m at 21.5°N).
    rows += [DeviceRow(100 + i, f"PS-{i}", "pressure_sensor", 105.85 + i * 0.0029, 21.55,
                       interval_s=10) for i in range(n_sensors)]
    rows += [DeviceRow(200, "TC-1", "traffic_controller", 105.9, 21.6, interval_s=60)]
    return DeviceTable.build(rows)


def engine(*docs: dict, tbl: DeviceTable | None = None) -> RuleEngine:
    eng = RuleEngine(tbl or table(), METRICS)
    changes = eng.set_rules([parse_rule(d) for d in docs])
    assert not changes.errors, changes.errors
    return eng


def batch(eng: RuleEngine, rows: list[tuple[int, str, float, float] | tuple[int, str, float, float, int]]
          ) -> Batch:
    """rows: (device key, metric, ts, value[, quality])."""
    keys = np.array([r[0] for r in rows])
    mids = np.array([METRICS[r[1]].id for r in rows])
    ts = np.array([r[2] for r in rows], dtype=float)
    vals = np.array([r[3] for r in rows], dtype=float)
    q = np.array([r[4] if len(r) > 4 else 0 for r in rows])
    return eng.batch(keys, mids, ts, vals, q)


def events(transitions) -> list[tuple[str, str, int]]:
    return [(t.rule, t.event, t.device) for t in transitions]
