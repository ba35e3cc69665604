"""The metric names of the server's catalogue, as data an adapter package can read.

Adapters never import ``server/``, and a third-party adapter is tested without a server,
so the names its readings may carry are copied here from ``server/store/catalog.py``
(where units and descriptions live). ``tests/adapters/test_catalog_copy.py`` fails when the
two lists differ, so adding a metric is one edit in each file, in the same commit.
"""

from __future__ import annotations

__all__ = ["METRIC_NAMES"]

METRIC_NAMES: frozenset[str] = frozenset({
    # streetlight
    "lamp_on", "dim_level_pct", "power_w", "energy_kwh", "burning_hours", "lamp_fault",
    "driver_fault",
    # lighting cabinet
    "voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a",
    "current_l3_a", "power_factor", "frequency_hz", "energy_import_kwh", "breaker_tripped",
    "door_open",
    # water
    "volume_m3", "flow_m3h", "battery_pct", "pressure_bar", "temperature_c",
    # traffic
    "mode", "plan", "detector_faults", "volume_vph", "occupancy_pct", "speed_kmh", "flow_vph",
    "congestion_level",
    # environment
    "pm25_ugm3", "pm10_ugm3", "no2_ppb", "noise_dba", "humidity_pct",
    # camera
    "online", "recording",
})
