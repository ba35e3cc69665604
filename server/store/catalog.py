"""Device kinds and metric names from CONTRACT.md, as data.

Synced into the ``kinds`` and ``metrics`` tables by ``ioc migrate`` (upsert, never delete),
so a new kind or metric is a change here, not a migration.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str | None = None
    value_type: str = "number"  # or "bool"
    description: str = ""


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    label_en: str
    label_vi: str
    metrics: tuple[str, ...] | None  # None: any metric is accepted
    expected_interval_s: int = 60


def _b(name: str, description: str = "") -> Metric:
    return Metric(name, None, "bool", description)


METRICS: tuple[Metric, ...] = (
    # streetlight
    _b("lamp_on"),
    Metric("dim_level_pct", "%"),
    Metric("power_w", "W"),
    Metric("energy_kwh", "kWh"),
    Metric("burning_hours", "h"),
    _b("lamp_fault"),
    _b("driver_fault"),
    # lighting cabinet
    Metric("voltage_l1_v", "V"),
    Metric("voltage_l2_v", "V"),
    Metric("voltage_l3_v", "V"),
    Metric("current_l1_a", "A"),
    Metric("current_l2_a", "A"),
    Metric("current_l3_a", "A"),
    Metric("power_factor"),
    Metric("frequency_hz", "Hz"),
    Metric("energy_import_kwh", "kWh"),
    _b("breaker_tripped"),
    _b("door_open"),
    # water
    Metric("volume_m3", "m³"),
    Metric("flow_m3h", "m³/h"),
    Metric("battery_pct", "%"),
    Metric("pressure_bar", "bar"),
    Metric("temperature_c", "°C"),
    # traffic
    Metric("mode", None, "number", "NTCIP 1202 control mode 0-8"),
    Metric("plan"),
    Metric("detector_faults"),
    Metric("volume_vph", "veh/h"),
    Metric("occupancy_pct", "%"),
    Metric("speed_kmh", "km/h"),
    Metric("flow_vph", "veh/h"),
    Metric("congestion_level", None, "number", "0 free flow - 4 jammed"),
    # environment
    Metric("pm25_ugm3", "µg/m³"),
    Metric("pm10_ugm3", "µg/m³"),
    Metric("no2_ppb", "ppb"),
    Metric("noise_dba", "dB(A)"),
    Metric("humidity_pct", "%"),
    # camera
    _b("online"),
    _b("recording"),
)

METRIC_NAMES = frozenset(m.name for m in METRICS)

KINDS: tuple[Kind, ...] = (
    Kind(
        "streetlight", "Streetlight", "Đèn đường",
        ("lamp_on", "dim_level_pct", "power_w", "energy_kwh", "burning_hours", "lamp_fault",
         "driver_fault"),
        300,
    ),
    Kind(
        "lighting_cabinet", "Lighting cabinet", "Tủ điện chiếu sáng",
        ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a",
         "current_l3_a", "power_w", "power_factor", "frequency_hz", "energy_import_kwh",
         "breaker_tripped", "door_open"),
        10,
    ),
    Kind("water_meter", "Water meter", "Đồng hồ nước",
         ("volume_m3", "flow_m3h", "battery_pct"), 900),
    Kind("pressure_sensor", "Pressure sensor", "Cảm biến áp lực",
         ("pressure_bar", "temperature_c"), 10),
    Kind("flow_meter", "Flow meter", "Lưu lượng kế", ("flow_m3h", "volume_m3"), 10),
    Kind("water_pipe", "Water main", "Đường ống nước", None, 3600),
    Kind(
        "traffic_controller", "Traffic controller", "Tủ điều khiển giao thông",
        ("mode", "plan", "detector_faults", "volume_vph", "occupancy_pct"),
        60,
    ),
    Kind("road_segment", "Road segment", "Đoạn đường",
         ("speed_kmh", "flow_vph", "congestion_level"), 60),
    Kind(
        "env_sensor", "Environmental station", "Trạm quan trắc môi trường",
        ("pm25_ugm3", "pm10_ugm3", "no2_ppb", "noise_dba", "temperature_c", "humidity_pct"),
        60,
    ),
    Kind("camera", "Camera", "Camera", ("online", "recording"), 60),
    # Assets without telemetry (CONTRACT: citizens' reports link a fallen tree to its tree):
    # no metric is accepted, and a day's expected interval keeps the availability check idle.
    Kind("tree", "Tree", "Cây xanh", (), 86400),
    Kind("green_area", "Green area", "Mảng xanh", (), 86400),
)

KIND_NAMES = frozenset(k.kind for k in KINDS)
