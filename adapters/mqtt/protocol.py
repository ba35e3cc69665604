"""Pure decoding of the native MQTT convention (CONTRACT.md, "MQTT (native convention)").

Topics and payloads::

    ioc/v1/{device_id}/telemetry   {"ts": "2026-11-22T10:00:00.123Z", "values": {"power_w": 41.5}}
                                   or a JSON array of such objects (a batch)
    ioc/v1/{device_id}/status      online | offline   (also the JSON string "online")

This runs once per message at up to 10,000 messages/s, so the happy path is plain dicts from
orjson, exact ``type() is`` checks and a cache of metric names already seen; no pydantic per
message. Everything here is synchronous and free of I/O: ``received_at`` is passed in so tests
pin the clock.

Decoding is partial by design: a bad value or batch entry costs only itself. Each problem
becomes one :class:`~adapters.sdk.DecodeError` whose ``field`` is the metric (or ``ts``,
``values``) and whose message says what to change on the device.

The helpers :func:`load_json`, :func:`parse_ts`, :func:`metric_name_problem` and
:func:`describe` are shared with the ChirpStack adapter so both speak the same rules.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.sdk import DecodeError, Reading, StatusUpdate

TELEMETRY_FILTER = "ioc/v1/+/telemetry"
STATUS_FILTER = "ioc/v1/+/status"

# Same rule as the registry's device ids (server/registry/devices.py ID_RE), repeated here because
# adapters never import server/. fullmatch, so a trailing newline is not accepted.
DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
# snake_case: lower-case words of letters and digits joined by single underscores.
METRIC_RE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
METRIC_MAX_LEN = 64

# Epoch-millisecond sanity window. Below 1e11 ms (March 1973) the sender almost certainly
# sent seconds; at or above 1e14 ms (year 5138) it sent micro- or nanoseconds.
_MS_MIN = 1e11
_MS_MAX = 1e14

# A batch of garbage could otherwise produce one dead letter per entry; past this many the
# rest are summarised in one error.
MAX_ERRORS = 50

_known_metrics: set[str] = set()  # names that passed METRIC_RE; bounded below
_KNOWN_METRICS_MAX = 10_000  # far above any real metric vocabulary; garbage cannot grow it


def describe(value: Any, limit: int = 40) -> str:
    """A short, safe rendering of a payload value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: Any) -> str:
    """The JSON name of a decoded value's type, as a device author would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def load_json(payload: bytes) -> Any:
    """Parse JSON with orjson; fall back to the stdlib only for what orjson refuses.

    Some firmwares write ``NaN``/``Infinity`` for a failed sensor (Python's ``json.dumps``
    does by default). orjson rejects those tokens; the stdlib accepts them, and
    :meth:`Reading.of` turns them into NOT_A_NUMBER / OUT_OF_RANGE readings, which is what a
    failed channel is. The fallback only runs on the error path, so it costs nothing per
    good message. Raises :class:`DecodeError` naming the line, column and byte of the fault.
    """
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        try:
            return json.loads(bytes(payload).decode("utf-8"))
        except (ValueError, RecursionError):
            pass
        raise DecodeError(
            f"payload is not valid JSON: {err.msg} at line {err.lineno} column {err.colno} (byte {err.pos})"
        ) from None


def parse_ts(raw: Any) -> datetime:
    """An RFC 3339 string or epoch milliseconds as an aware UTC datetime.

    A time without an offset is taken as UTC: devices without a time zone database
    usually mean UTC, and guessing the server's zone would be worse. Raises ValueError
    with the reason, worded for the person who configures the device.
    """
    kind = type(raw)
    if kind is str:
        if len(raw) < 16 or raw[4:5] != "-" or raw[7:8] != "-" or raw[10:11] not in ("T", "t", " "):
            raise ValueError(f"{describe(raw)} is not an RFC 3339 date-time such as 2026-11-22T10:00:00Z")
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError as err:
            try:  # RFC 3339 allows lower-case 't' and 'z'; fromisoformat does not
                ts = datetime.fromisoformat(raw.upper())
            except ValueError:
                raise ValueError(f"{describe(raw)} is not a valid date-time ({err})") from None
        if ts.tzinfo is None:
            return ts.replace(tzinfo=UTC)
        if ts.tzinfo is UTC:
            return ts
        try:
            return ts.astimezone(UTC)
        except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
            raise ValueError(f"{describe(raw)} is outside the supported years 1-9999") from None
    if kind is int or kind is float:
        if not _MS_MIN <= raw < _MS_MAX:  # also false for NaN
            if 1e8 <= raw < _MS_MIN:
                hint = "; it looks like epoch seconds, send milliseconds"
            elif _MS_MAX <= raw < math.inf:
                hint = "; it looks like micro- or nanoseconds, send milliseconds"
            else:
                hint = ""
            raise ValueError(f"epoch milliseconds {describe(raw)} are out of range{hint}")
        return datetime.fromtimestamp(raw / 1000, UTC)
    raise ValueError(
        f"{type_name(raw)} ({describe(raw)}) is not a time; send an RFC 3339 string or epoch milliseconds"
    )


def _snake_guess(name: str) -> str:
    guess = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", guess.lower()).strip("_")


def metric_name_problem(name: str) -> str | None:
    """None for a valid metric name, else what is wrong with it (with a suggestion)."""
    if name in _known_metrics:
        return None
    if len(name) <= METRIC_MAX_LEN and METRIC_RE.fullmatch(name):
        if len(_known_metrics) < _KNOWN_METRICS_MAX:
            _known_metrics.add(name)
        return None
    problem = (
        f"metric name {describe(name)} is not snake_case (lower-case letters and digits"
        f" joined by single underscores, starting with a letter, at most {METRIC_MAX_LEN})"
    )
    guess = _snake_guess(name)
    if guess and len(guess) <= METRIC_MAX_LEN and METRIC_RE.fullmatch(guess):
        problem += f"; did you mean {guess!r}?"
    return problem


def to_float(raw: Any) -> float | None:
    """A JSON number or boolean as float; None for any other type."""
    kind = type(raw)
    if kind is float:
        return raw
    if kind is int:
        try:
            return float(raw)
        except OverflowError:  # an integer beyond 1e308 (only via the stdlib fallback)
            return math.inf if raw > 0 else -math.inf
    if kind is bool:
        return 1.0 if raw else 0.0
    return None


def value_problem(metric: str, raw: Any) -> str:
    """Why ``raw`` is not a usable value of ``metric``."""
    shown = "" if raw is None else f" ({describe(raw)})"
    message = f"value of {metric!r} is {type_name(raw)}{shown}; send a JSON number or boolean"
    if isinstance(raw, str):
        try:
            float(raw)
            message += " without quotes"
        except ValueError:
            pass
    elif raw is None:
        message += ", or leave the metric out when there is no value"
    return message


def parse_topic(topic: str) -> tuple[str, str]:
    """``(device_id, "telemetry" | "status")`` from a native topic, or DecodeError."""
    parts = topic.split("/")
    if (
        len(parts) != 4
        or parts[0] != "ioc"
        or parts[1] != "v1"
        or parts[3]
        not in (
            "telemetry",
            "status",
        )
    ):
        raise DecodeError(
            f"topic {describe(topic, 80)} is not ioc/v1/{{device_id}}/telemetry"
            " or ioc/v1/{device_id}/status"
        )
    device_id = parts[2]
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise DecodeError(
            f"device id {describe(device_id)} in topic is not valid: use 1-128 letters, digits,"
            " '.', '_', ':' or '-', starting with a letter or digit"
        )
    return device_id, parts[3]


def decode_telemetry(
    device_id: str, payload: bytes, received_at: datetime
) -> tuple[list[Reading], list[DecodeError]]:
    """Readings of one telemetry message (an object or a batch array), and its problems."""
    readings: list[Reading] = []
    errors: list[DecodeError] = []
    try:
        doc = load_json(payload)
    except DecodeError as err:
        err.device_id = device_id
        return readings, [err]
    if type(doc) is dict:
        _decode_entry(device_id, doc, received_at, "", readings, errors)
    elif type(doc) is list:
        for index, entry in enumerate(doc):
            _decode_entry(device_id, entry, received_at, f"batch entry {index}: ", readings, errors)
    else:
        errors.append(
            DecodeError(
                f"payload is {type_name(doc)}; expected an object"
                ' {"ts": ..., "values": {...}} or an array of them',
                device_id=device_id,
            )
        )
    if len(errors) > MAX_ERRORS:
        more = len(errors) - MAX_ERRORS
        del errors[MAX_ERRORS:]
        errors.append(DecodeError(f"{more} more problems in this message not listed", device_id=device_id))
    return readings, errors


def _decode_entry(
    device_id: str,
    entry: Any,
    received_at: datetime,
    where: str,
    readings: list[Reading],
    errors: list[DecodeError],
) -> None:
    if type(entry) is not dict:
        errors.append(DecodeError(f"{where}expected an object, got {type_name(entry)}", device_id=device_id))
        return
    values = entry.get("values")
    if type(values) is not dict:
        found = "missing" if values is None and "values" not in entry else type_name(values)
        errors.append(
            DecodeError(
                f'{where}"values" is {found}; expected an object such as {{"values": {{"power_w": 41.5}}}}',
                field="values",
                device_id=device_id,
            )
        )
        return
    raw_ts = entry.get("ts")
    if raw_ts is None:
        ts = received_at
    else:
        try:
            ts = parse_ts(raw_ts)
        except ValueError as err:
            # Without a trustworthy time the values would be filed at the wrong moment.
            errors.append(DecodeError(f"{where}bad ts: {err}", field="ts", device_id=device_id))
            return
    known = _known_metrics
    append = readings.append
    for metric, raw in values.items():
        if metric not in known:
            problem = metric_name_problem(metric)
            if problem is not None:
                errors.append(DecodeError(where + problem, field=metric, device_id=device_id))
                continue
        # to_float inlined for the common types: this loop runs 50,000 times a second
        kind = type(raw)
        if kind is float:
            value = raw
        elif kind is bool:
            value = 1.0 if raw else 0.0
        else:
            value = to_float(raw)
            if value is None:
                errors.append(DecodeError(where + value_problem(metric, raw), field=metric,
                                          device_id=device_id))
                continue
        if value - value == 0.0:  # finite: skip Reading.of's NaN/inf checks
            append(Reading(device_id, metric, value, ts))
        else:
            append(Reading.of(device_id, metric, value, ts))


def decode_status(device_id: str, payload: bytes, received_at: datetime) -> StatusUpdate:
    """``online``/``offline`` (any case, surrounding blanks, or as a JSON string)."""
    word = bytes(payload).strip().lower()
    if word[:1] == b'"':
        try:
            text = orjson.loads(word)
        except orjson.JSONDecodeError:
            text = None
        word = text.strip().lower().encode() if isinstance(text, str) else b""
    if word == b"online":
        return StatusUpdate(device_id, True, received_at)
    if word == b"offline":
        return StatusUpdate(device_id, False, received_at)
    raise DecodeError(
        f"status payload {describe(bytes(payload))} is neither 'online' nor 'offline'",
        device_id=device_id,
    )


def decode(
    topic: str, payload: bytes, received_at: datetime
) -> tuple[list[Reading | StatusUpdate], list[DecodeError]]:
    """Everything one native message says, and one error per part that could not be used.

    A zero-length payload is how MQTT deletes a retained message; it carries no news about
    the device, so it yields nothing rather than a dead letter.
    """
    try:
        device_id, channel = parse_topic(topic)
    except DecodeError as err:
        return [], [err]
    if not payload:
        return [], []
    if channel == "telemetry":
        readings, errors = decode_telemetry(device_id, payload, received_at)
        return readings, errors  # type: ignore[return-value]
    try:
        return [decode_status(device_id, payload, received_at)], []
    except DecodeError as err:
        return [], [err]
