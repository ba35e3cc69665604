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
        serial = topic.split("/")[1]
        now = utcnow()
        out = []
        for part in payload.decode("ascii", "replace").split(";"):
            key, _, raw = part.partition("=")
            if key not in FIELDS:
                raise DecodeError(f"unknown field {key!r}", field=key, device_id=serial)
            try:
                out.append(Reading(serial, FIELDS[key], float(raw), now))
            except ValueError:
                raise DecodeError(f"{key}={raw!r} is not a number", field=key,
                                  device_id=serial) from None
        return out
