"""ACME's cloud keeps readings of its water meters; this adapter polls its HTTP API.

    GET {base_url}/v1/meters?serial=M-1&serial=M-2      Authorization: Bearer {api_key}
    → {"meters": [{"serial": "M-1", "ts": 1795320000000, "volume_m3": 345.6, "flow_m3h": 1.2}]}
    PUT {base_url}/v1/meters/{serial}/valve   {"open": false}
    → {"serial": "M-1", "valve_open": false}                 (what the meter now reports)

Which meters: the devices the IOC registry binds to this adapter (``adapter`` =
``acme_meter``), by ``adapter_config.meter`` or else their ``external_id``. The server
schedules the polls and acts on the errors raised here; this module only speaks HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from adapters.sdk import (
    AuthError,
    ConfigError,
    PollingAdapter,
    Quality,
    Reading,
    TransientError,
    utcnow,
)

METRICS = ("volume_m3", "flow_m3h", "battery_pct")


class AcmeMeterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(pattern=r"^https?://")
    api_key: str = Field(min_length=1)


class AcmeMeterAdapter(PollingAdapter):
    kind = "acme_meter"
    iot_class = "cloud_polling"
    config_model: ClassVar[type[BaseModel]] = AcmeMeterConfig
    poll_interval = timedelta(seconds=60)

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.config.api_key}"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _meters(self) -> dict[str, str]:
        """serial → device id, for the bound devices."""
        out = {}
        for b in self.bindings:
            serial = b.config.get("meter") or b.external_id
            if serial:
                out[str(serial)] = b.device_id
        return out

    async def _request(self, method: str, path: str, config_errors: dict[int, str], **kw) -> dict:
        """One call to the cloud, its failures translated into the SDK's errors: refused
        credentials, a configuration the cloud says is wrong (``config_errors``, by status),
        or anything else, which is transient."""
        assert self._session is not None
        url = self.config.base_url.rstrip("/") + path
        try:
            async with self._session.request(method, url, **kw) as resp:
                if resp.status in (401, 403):
                    raise AuthError(f"ACME cloud refused the API key (HTTP {resp.status})")
                if resp.status in config_errors:
                    raise ConfigError(config_errors[resp.status].format(url=url))
                if resp.status >= 400:
                    raise TransientError(f"ACME cloud answered HTTP {resp.status}")
                doc = await resp.json()
        except aiohttp.ClientError as err:
            raise TransientError(f"ACME cloud unreachable: {err}") from err
        except ValueError as err:  # a body cut short, or not JSON though it says so
            raise TransientError(f"ACME cloud answered malformed JSON: {err}") from err
        if not isinstance(doc, dict):
            raise TransientError(f"ACME cloud answered a JSON {type(doc).__name__}, not an object")
        return doc

    async def write(self, device_id: str, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``set_valve`` (the server validated ``open``); the meter's answer is the read-back."""
        if name != "set_valve":
            raise ConfigError(f"ACME meters take set_valve only, not {name}")
        serial = next((s for s, d in self._meters().items() if d == device_id), None)
        if serial is None:
            raise ConfigError(f"device {device_id} has no ACME meter serial (adapter_config.meter "
                              "or external_id)")
        doc = await self._request("PUT", f"/v1/meters/{serial}/valve",
                                  {409: f"meter {serial} has no remote valve"},
                                  json={"open": bool(args["open"])})
        if doc.get("valve_open") is not bool(args["open"]):
            raise TransientError(f"meter {serial} reports valve_open={doc.get('valve_open')}")
        return {"valve_open": doc["valve_open"]}

    async def poll(self) -> Sequence[Reading]:
        meters = self._meters()
        if not meters:
            return []
        doc = await self._request("GET", "/v1/meters", {404: "{url} does not exist: check base_url"},
                                  params=[("serial", s) for s in meters])
        entries = doc.get("meters", [])
        if not isinstance(entries, list):
            raise TransientError("ACME cloud answered 'meters' that is not a list")
        out = []
        now = utcnow()
        for i, m in enumerate(entries):
            if not isinstance(m, dict):
                raise TransientError(f"ACME cloud answered meters[{i}] that is not an object")
            device = meters.get(str(m.get("serial")))
            if device is None:
                continue
            ts = _timestamp(m.get("ts"))
            if ts is None:
                raise TransientError(f"ACME cloud answered meter {m['serial']} without a "
                                     f"timestamp in ms (ts={m.get('ts')!r})")
            ts = min(ts, now)  # a cloud clock ahead of ours must not date readings in the future
            out += [_reading(device, k, m[k], ts) for k in METRICS if k in m]
        return out


def _timestamp(ms: object) -> datetime | None:
    """Epoch milliseconds as an aware datetime; None when they are not a usable number."""
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # NaN, or beyond the calendar
        return None


def _reading(device: str, metric: str, raw: object, ts: datetime) -> Reading:
    """A number becomes a reading (NaN and infinities flagged); anything else the cloud
    puts there ("n/a", null) means the meter's value is unusable: quality FAULT."""
    if isinstance(raw, int | float):
        return Reading.of(device, metric, raw, ts)
    return Reading(device, metric, 0.0, ts, Quality.FAULT)
