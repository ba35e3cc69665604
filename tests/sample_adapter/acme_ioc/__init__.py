"""ACME lamp controllers publish ``acme/<serial>/state`` as ``power=41.5;on=1;dim=70``.

The serial is the device's ``external_id`` in the IOC registry.
"""

from __future__ import annotations

from typing import ClassVar

from adapters.sdk import DecodeError, PushAdapter, Reading, utcnow

FIELDS = {"power": "power_w", "on": "lamp_on", "dim": "dim_level_pct"}


class AcmeLampAdapter(PushAdapter):
    kind = "acme_lamp"
    topic_filters: ClassVar[tuple[str, ...]] = ("acme/+/state",)
    addressed_by = "external_id"

    def decode(self, topic: str, payload: bytes) -> list[Reading]:
        levels = topic.split("/")
        if len(levels) != 3 or levels[0] != "acme" or not levels[1] or levels[2] != "state":
            raise DecodeError(f"topic {topic!r} is not acme/<serial>/state")
        serial = levels[1]
        now = utcnow()
        out = []
        for part in payload.decode("ascii", "replace").split(";"):
            key, _, raw = part.partition("=")
            if key not in FIELDS:
                raise DecodeError(f"unknown field {key!r}", field=key, device_id=serial)
            try:
                value = float(raw)
            except ValueError:
                raise DecodeError(f"{key}={raw!r} is not a number", field=key,
                                  device_id=serial) from None
            # "nan" and "inf" parse as floats: Reading.of gives them the quality they mean.
            out.append(Reading.of(serial, FIELDS[key], value, now))
        return out
