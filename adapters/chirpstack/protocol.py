"""Pure decoding of ChirpStack v4 integration events (JSON marshaler).

ChirpStack publishes ``application/{application_id}/device/{dev_eui}/event/{event}``
(its default ``event_topic``). Two events carry telemetry:

* ``up``: the device-profile codec's output is in ``object``; ``time`` is when ChirpStack
  received the frame. Without a codec there is no ``object``: the payload is vendor binary
  we cannot read, which is a configuration problem to fix in ChirpStack, not here.
* ``status``: the network's DevStatusReq answer; ``batteryLevel`` is a percentage unless
  ``externalPowerSource`` or ``batteryLevelUnavailable`` is set.

``join``, ``ack``, ``txack``, ``log``, ``location`` and ``integration`` say nothing about
the measured world and yield nothing.

Readings are addressed by DevEUI (16 lower-case hex digits); the server maps it to the
registry device through ``external_id``. Codec key names vary by vendor (``volume``,
``totalVolume``, ``batteryLevel``...), so they go through a mapping to our metric names;
keys that already are snake_case metric names pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from adapters.mqtt.protocol import (
    describe,
    load_json,
    metric_name_problem,
    parse_ts,
    to_float,
    type_name,
    value_problem,
)
from adapters.sdk import DecodeError, Reading

UP_FILTER = "application/+/device/+/event/up"
STATUS_FILTER = "application/+/device/+/event/status"
IGNORED_EVENTS = frozenset({"join", "ack", "txack", "log", "location", "integration"})

DEV_EUI_RE = re.compile(r"[0-9a-f]{16}")

# Codec keys seen in common water-meter, pressure and environment codecs, to our names.
DEFAULT_METRIC_MAP: Mapping[str, str] = {
    "volume": "volume_m3",
    "totalVolume": "volume_m3",
    "total_volume": "volume_m3",
    "flow": "flow_m3h",
    "flowRate": "flow_m3h",
    "flow_rate": "flow_m3h",
    "battery": "battery_pct",
    "batteryLevel": "battery_pct",
    "battery_level": "battery_pct",
    "pressure": "pressure_bar",
    "temperature": "temperature_c",
    "temp": "temperature_c",
    "humidity": "humidity_pct",
}


def normalise_dev_eui(raw: Any) -> str | None:
    """The DevEUI as 16 lower-case hex digits, or None if it is not one."""
    if type(raw) is not str:
        return None
    eui = raw.lower()
    return eui if DEV_EUI_RE.fullmatch(eui) else None


class UplinkDecoder:
    """Decodes ChirpStack events with one adapter's metric mapping (built once, reused)."""

    def __init__(self, metric_map: Mapping[str, str], *, pass_through: bool = True) -> None:
        self.metric_map = dict(metric_map)
        self.pass_through = pass_through

    def decode(
        self, topic: str, payload: bytes, received_at: datetime
    ) -> tuple[list[Reading], list[DecodeError]]:
        """The readings of one event, and one error per part that could not be used."""
        parts = topic.split("/")
        if len(parts) != 6 or parts[0] != "application" or parts[2] != "device" or (parts[4] != "event"):
            return [], [
                DecodeError(
                    f"topic {describe(topic, 80)} is not"
                    " application/{application_id}/device/{dev_eui}/event/{event}"
                )
            ]
        event = parts[5]
        if event in IGNORED_EVENTS:
            return [], []
        if event not in ("up", "status"):
            return [], [DecodeError(f"unsupported ChirpStack event {describe(event)}")]
        try:
            doc = load_json(payload)
        except DecodeError as err:
            err.device_id = normalise_dev_eui(parts[3])
            return [], [err]
        if type(doc) is not dict:
            return [], [
                DecodeError(
                    f"ChirpStack {event} event is {type_name(doc)}; expected a JSON object"
                    " (is the integration's marshaler set to JSON?)",
                    device_id=normalise_dev_eui(parts[3]),
                )
            ]
        info = doc.get("deviceInfo")
        if type(info) is not dict:
            info = {}
        try:
            dev_eui = self._dev_eui(parts[3], info.get("devEui"))
            raw_time = doc.get("time")
            ts = received_at if raw_time is None else parse_ts(raw_time)
        except DecodeError as err:
            return [], [err]
        except ValueError as err:
            return [], [DecodeError(f"bad time: {err}", field="time", device_id=dev_eui)]
        if event == "status":
            return self._status(dev_eui, doc, ts)
        return self._uplink(dev_eui, doc, info, ts)

    @staticmethod
    def _dev_eui(topic_eui: str, payload_eui: Any) -> str:
        from_topic = normalise_dev_eui(topic_eui)
        if payload_eui is None:
            if from_topic is None:
                raise DecodeError(
                    f"DevEUI {describe(topic_eui)} in topic is not 16 hex digits"
                    " and the event has no deviceInfo.devEui"
                )
            return from_topic
        eui = normalise_dev_eui(payload_eui)
        if eui is None:
            raise DecodeError(f"deviceInfo.devEui {describe(payload_eui)} is not 16 hex digits")
        if from_topic != eui:
            # ChirpStack builds the topic from the same DevEUI; a mismatch means another
            # publisher is writing under application/... and must not be trusted.
            raise DecodeError(
                f"DevEUI {describe(topic_eui)} in topic differs from deviceInfo.devEui {eui!r}",
                device_id=eui,
            )
        return eui

    def _uplink(
        self, dev_eui: str, doc: dict[str, Any], info: dict[str, Any], ts: datetime
    ) -> tuple[list[Reading], list[DecodeError]]:
        obj = doc.get("object")
        if obj is None:
            if not doc.get("data"):
                return [], []  # MAC-commands-only or empty frame: nothing from the application
            profile = info.get("deviceProfileName")
            where = f" of device profile {describe(profile)}" if type(profile) is str else ""
            return [], [
                DecodeError(
                    f"no decoded object: configure a codec in ChirpStack (the payload codec{where})",
                    field="object",
                    device_id=dev_eui,
                )
            ]
        if type(obj) is not dict:
            return [], [
                DecodeError(
                    f"decoded object is {type_name(obj)}; the codec must return an object of values",
                    field="object",
                    device_id=dev_eui,
                )
            ]
        readings: list[Reading] = []
        errors: list[DecodeError] = []
        seen: set[str] = set()
        unused: list[str] = []
        for key, raw in obj.items():
            metric = self.metric_map.get(key)
            mapped = metric is not None
            if metric is None:
                if not self.pass_through or metric_name_problem(key) is not None:
                    unused.append(key)
                    continue
                metric = key
            value = to_float(raw)
            if value is None and mapped and type(raw) is str:
                try:  # JS codecs often return x.toFixed(2), which is a string
                    value = float(raw)
                except ValueError:
                    pass
            if value is None:
                if not mapped:
                    unused.append(key)  # descriptive pass-through fields ("unit": "m3")
                else:
                    errors.append(
                        DecodeError(
                            "codec output: " + value_problem(key, raw),
                            field=metric,
                            device_id=dev_eui,
                        )
                    )
                continue
            if metric in seen:
                continue  # two codec keys for one metric: the first one wins
            seen.add(metric)
            readings.append(Reading.of(dev_eui, metric, value, ts))
        if not readings and not errors:
            keys = ", ".join(describe(key, 30) for key in unused[:10]) or "none"
            errors.append(
                DecodeError(
                    f"decoded object has no metric this adapter knows (keys: {keys});"
                    " add them to the chirpstack adapter's metric_map",
                    field="object",
                    device_id=dev_eui,
                )
            )
        return readings, errors

    @staticmethod
    def _status(dev_eui: str, doc: dict[str, Any], ts: datetime) -> tuple[list[Reading], list[DecodeError]]:
        if doc.get("externalPowerSource") or doc.get("batteryLevelUnavailable"):
            return [], []
        raw = doc.get("batteryLevel")
        if raw is None:
            return [], []  # proto3 JSON omits zero values; 0 % is not a LoRaWAN level
        value = to_float(raw)
        if value is None or type(raw) is bool:
            return [], [
                DecodeError(
                    f"batteryLevel is {type_name(raw)} ({describe(raw)}); expected a number",
                    field="battery_pct",
                    device_id=dev_eui,
                )
            ]
        return [Reading.of(dev_eui, "battery_pct", value, ts)], []
