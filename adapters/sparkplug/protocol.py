"""Sparkplug B 3.0 as a host application sees it: topics, Tahu protobuf payloads, sessions.

Topics (Eclipse Sparkplug 3.0.0, chapter 4)::

    spBv1.0/{group}/NBIRTH|NDATA|NDEATH|NCMD/{edge node}
    spBv1.0/{group}/DBIRTH|DDATA|DDEATH|DCMD/{edge node}/{device}
    spBv1.0/STATE/{host id}                                  (host applications, JSON)

Payloads are the Tahu protobuf ``Payload`` (``sparkplug_b.proto`` beside this module,
decoded by the protobuf runtime; no hand-written wire parsing here).

Unlike the JSON conventions this decoder has memory, because Sparkplug does: a birth
certificate (NBIRTH, DBIRTH) names every metric with its datatype and an optional alias,
and later data messages may carry only the alias. :class:`SessionDecoder` keeps, per edge
node, the metric names and datatypes of its birth and of each device's birth, the birth's
``bdSeq``, and the last ``seq`` (0..255, one counter per edge node across all its N and D
messages).

What happens to each message:

* a birth registers its metrics (name, alias, datatype) and its values are stored; a
  DBIRTH marks the device online;
* a data message's metrics are resolved by name or alias and stored;
* a ``seq`` that is not the previous one plus one (a lost message), or a data message from
  a node or device whose birth we have not seen, queues a Rebirth request (an NCMD with
  ``Node Control/Rebirth`` = true) for the server to publish, at most one per node per
  ``rebirth_interval_s``. Nothing recoverable is dropped meanwhile: metrics whose name is
  known (sent by name, or an alias of the last birth) are stored; only alias-only metrics
  that no birth explains are rejected, each with its reason;
* NDEATH marks the node's devices (and the node, if it reports metrics itself) offline,
  unless its ``bdSeq`` differs from the current birth's: that is the will of an earlier
  connection, delivered late, and is ignored;
* DDEATH marks the device offline;
* NCMD, DCMD (commands, ours or another host's) and STATE say nothing about the measured
  world and yield nothing.

Readings and statuses are addressed by ``external_id``: ``{group}/{edge node}/{device}``
for a device, ``{group}/{edge node}`` for the node's own metrics; the server maps it to
the registry's device. A metric is stored under ``metric_map[name]`` if the integration
maps it, else under its name or the last ``/`` segment of its name if that is a catalogue
metric (``Lamp/power_w`` → ``power_w``). Numbers and booleans are stored; strings,
bytes, data sets and templates cannot be, and say so.

Everything here is synchronous and free of I/O; the clock is passed in. The messages the
decoder wants published (rebirth requests) wait in :attr:`SessionDecoder.outgoing`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from adapters.catalog import METRIC_NAMES
from adapters.mqtt.protocol import MAX_ERRORS, describe
from adapters.sdk import DecodeError, Reading, StatusUpdate
from adapters.sparkplug.sparkplug_b_pb2 import Payload

__all__ = [
    "BOOLEAN",
    "DATATYPES",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "TOPIC_FILTER",
    "SessionDecoder",
    "command_payload",
    "parse_topic",
    "rebirth_payload",
    "state_payload",
]

NAMESPACE = "spBv1.0"
TOPIC_FILTER = f"{NAMESPACE}/#"
REBIRTH_METRIC = "Node Control/Rebirth"

# Metric.datatype (Sparkplug 3.0 §6.4.16).
DATATYPES = {
    0: "Unknown", 1: "Int8", 2: "Int16", 3: "Int32", 4: "Int64", 5: "UInt8", 6: "UInt16",
    7: "UInt32", 8: "UInt64", 9: "Float", 10: "Double", 11: "Boolean", 12: "String",
    13: "DateTime", 14: "Text", 15: "UUID", 16: "DataSet", 17: "Bytes", 18: "File",
    19: "Template", 20: "PropertySet", 21: "PropertySetList",
}
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN = 9, 10, 11
# Signed integers travel as two's complement in the unsigned int_value/long_value fields.
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_NUMERIC = frozenset({INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT, DOUBLE,
                      BOOLEAN, 13})  # 13: DateTime (ms since the epoch) is a number too

NODE_TYPES = frozenset({"NBIRTH", "NDATA", "NDEATH", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDATA", "DDEATH", "DCMD"})
# Session bookkeeping, not measurements: never stored, never "unknown".
_CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Properties/", "Node Info/",
                     "Device Info/")
BD_SEQ = "bdSeq"

# Sparkplug ids are UTF-8 without '/', '+', '#' (§4.1); we also refuse control characters
# (they cannot be a registry external_id) and absurd lengths.
_ID_RE = re.compile(r"[^\x00-\x1f\x7f/+#]{1,128}")
# Bounds on what a misbehaving publisher can make us remember.
MAX_NODES = 50_000
MAX_DEVICES_PER_NODE = 10_000
MAX_METRICS_PER_BIRTH = 10_000
# Epoch milliseconds we accept as a time at all (1970..9999); the ingest writer then applies
# the retention and clock-skew windows.
_MS_MAX = 253_402_300_799_000


def parse_topic(topic: str) -> tuple[str, str, str, str | None]:
    """``(group, message type, edge node, device or None)``; :class:`DecodeError` if the
    topic is not a Sparkplug B data topic (STATE is handled before this)."""
    parts = topic.split("/")
    if parts[0] != NAMESPACE or len(parts) not in (4, 5):
        raise DecodeError(f"topic {describe(topic, 80)} is not "
                          "spBv1.0/{group}/{message type}/{edge node}[/{device}]")
    group, mtype, edge = parts[1], parts[2], parts[3]
    device = parts[4] if len(parts) == 5 else None
    if group == "STATE":
        raise DecodeError(f"topic {describe(topic, 80)}: 'STATE' is not a group id, it is reserved "
                          "for host applications (spBv1.0/STATE/{host id})")
    if mtype in NODE_TYPES:
        if device is not None:
            raise DecodeError(f"{mtype} topic {describe(topic, 80)} names a device; node messages "
                              "end at the edge node")
    elif mtype in DEVICE_TYPES:
        if device is None:
            raise DecodeError(f"{mtype} topic {describe(topic, 80)} has no device id")
    else:
        raise DecodeError(f"unknown Sparkplug message type {describe(mtype)} (expected NBIRTH, "
                          "NDATA, NDEATH, DBIRTH, DDATA or DDEATH)")
    for what, value in (("group id", group), ("edge node id", edge), ("device id", device)):
        if value is not None and not _ID_RE.fullmatch(value):
            raise DecodeError(f"{what} {describe(value)} in topic is empty, too long or has "
                              "control characters")
    return group, mtype, edge, device


def _ms_to_dt(ms: int) -> datetime | None:
    if ms > _MS_MAX:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(slots=True)
class _Scope:
    """The metrics one birth certificate declared (a node's or one device's)."""

    by_alias: dict[int, str] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    born: bool = True  # False after a DDEATH: data before the next DBIRTH asks for a rebirth


@dataclass(slots=True)
class _Node:
    bd_seq: int | None = None
    seq: int | None = None  # the last seq seen
    born: bool = False  # an NBIRTH seen and no NDEATH since
    reports: bool = False  # its birth has metrics of its own that we store
    scope: _Scope = field(default_factory=_Scope)
    devices: dict[str, _Scope] = field(default_factory=dict)
    rebirth_at: float | None = None  # when we last asked for a rebirth (monotonic s)


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a Sparkplug metric name becomes in the catalogue, decided once per name."""

    metric: str | None  # the catalogue name, or None when it is not one
    control: bool = False  # bdSeq, Node Control/…: bookkeeping, never stored


class SessionDecoder:
    """Decodes Sparkplug B messages with one integration's metric mapping, remembering the
    edge nodes' births between messages (one instance per server process)."""

    def __init__(self, metric_map: Mapping[str, str], *, rebirth_interval_s: float = 5.0,
                 metric_names: Iterable[str] = METRIC_NAMES) -> None:
        self.metric_map = dict(metric_map)
        self.metric_names = frozenset(metric_names)
        self.rebirth_interval_s = rebirth_interval_s
        self.nodes: dict[tuple[str, str], _Node] = {}
        # (topic, payload) the server should publish: rebirth requests.
        self.outgoing: list[tuple[str, bytes]] = []
        # Called with (external_id, catalogue metric, value) for every stored reading: how
        # a command transport sees a device confirm a write.
        self.on_reading: Callable[[str, str, float], None] | None = None
        self.rebirths_requested = 0
        self._names: dict[str, Resolved] = {}

    # ------------------------------------------------------------------ names
    def resolve(self, name: str) -> Resolved:
        hit = self._names.get(name)
        if hit is not None:
            return hit
        if name == BD_SEQ or name.startswith(_CONTROL_PREFIXES):
            hit = Resolved(None, control=True)
        elif name in self.metric_map:
            hit = Resolved(self.metric_map[name])
        elif name in self.metric_names:
            hit = Resolved(name)
        else:
            last = name.rsplit("/", 1)[-1]
            hit = Resolved(last if last in self.metric_names else None)
        if len(self._names) < 100_000:  # garbage names cannot grow it without bound
            self._names[name] = hit
        return hit

    def sparkplug_name(self, external_id: str, metric: str) -> tuple[str, int | None, int | None]:
        """The name, alias and datatype under which ``external_id``'s birth declared the
        catalogue ``metric`` (for a command), or the best guess without a birth."""
        parts = external_id.split("/")
        node = self.nodes.get((parts[0], parts[1])) if len(parts) in (2, 3) else None
        scope = None
        if node is not None:
            scope = node.scope if len(parts) == 2 else node.devices.get(parts[2])
        if scope is not None:
            aliases = {name: alias for alias, name in scope.by_alias.items()}
            for name, datatype in scope.types.items():
                if self.resolve(name).metric == metric:
                    return name, aliases.get(name), datatype
        mapped = next((src for src, dst in self.metric_map.items() if dst == metric), None)
        return mapped or metric, None, None

    # ------------------------------------------------------------------ messages
    def decode(self, topic: str, payload: bytes, received_at: datetime,
               now: float) -> tuple[list[Reading | StatusUpdate], list[DecodeError]]:
        """The readings and statuses of one message, and one error per part that could not
        be used. ``now`` is a monotonic clock in seconds (for rebirth throttling)."""
        if topic.startswith(NAMESPACE + "/STATE/") and topic.count("/") == 2:
            return [], []  # host applications' STATE (ours too): nothing measured
        try:
            group, mtype, edge, device = parse_topic(topic)
        except DecodeError as err:
            return [], [err]
        if mtype in ("NCMD", "DCMD"):
            return [], []  # commands to the edge, published by us or another host
        node_id = f"{group}/{edge}"
        external = node_id if device is None else f"{node_id}/{device}"
        try:
            msg = Payload.FromString(payload)
        except (ProtobufDecodeError, ValueError, RecursionError) as err:
            return [], [DecodeError(f"{mtype} payload is not a Sparkplug B protobuf Payload: {err}",
                                    device_id=external)]
        ts = received_at
        if msg.HasField("timestamp"):
            ts = _ms_to_dt(msg.timestamp) or received_at
        key = (group, edge)
        node = self.nodes.get(key)
        if mtype == "NBIRTH":
            return self._nbirth(key, node_id, msg, ts, now)
        if mtype == "NDEATH":
            return self._ndeath(key, node, node_id, msg, ts)
        errors: list[DecodeError] = []
        if node is None:
            node = self._node(key)
        # Every other N/D message is numbered: one more than the last, modulo 256.
        gap = self._seq_problem(node, msg)
        node.seq = msg.seq if msg.HasField("seq") and msg.seq < 256 else None
        if mtype == "DBIRTH":
            assert device is not None
            if gap is not None or not node.born:
                self._rebirth(key, node, now)
            return self._dbirth(node, device, external, msg, ts, errors)
        if mtype == "DDEATH":
            assert device is not None
            scope = node.devices.get(device)
            if scope is not None:
                scope.born = False
            if gap is not None:
                self._rebirth(key, node, now)
            return [StatusUpdate(external, False, ts)], errors
        # NDATA, DDATA
        if device is None:
            scope: _Scope | None = node.scope if node.born else None
        else:
            scope = node.devices.get(device)
            if scope is not None and not scope.born:
                scope = None
        if gap is not None or scope is None or not node.born:
            self._rebirth(key, node, now)
        why = None
        if scope is None:
            what = "edge node" if device is None else "device"
            why = (f"no birth certificate from {what} {external!r} yet; a rebirth was requested")
            scope = (node.scope if device is None else node.devices.get(device)) or _Scope()
        readings = self._metrics(msg.metrics, scope, external, ts, errors, register=False,
                                 unexplained=why)
        if device is None and readings:
            node.reports = True
        return readings, errors

    # ------------------------------------------------------------------ births and deaths
    def _node(self, key: tuple[str, str]) -> _Node:
        if len(self.nodes) >= MAX_NODES:
            self.nodes.pop(next(iter(self.nodes)))  # the longest-known: most likely gone
        node = self.nodes[key] = _Node()
        return node

    def _nbirth(self, key, node_id: str, msg: Payload, ts: datetime, now: float):
        errors: list[DecodeError] = []
        node = self._node(key)  # a new session: forget the old one's aliases and devices
        node.born = True
        node.seq = msg.seq if msg.HasField("seq") and msg.seq < 256 else None
        if node.seq is None:
            errors.append(DecodeError(f"NBIRTH of {node_id!r} has no seq 0..255 (got "
                                      f"{msg.seq if msg.HasField('seq') else 'none'}); the next "
                                      "message's seq is taken as it comes", field="seq",
                                      device_id=node_id))
        node.bd_seq = _bd_seq(msg)
        items: list[Reading | StatusUpdate] = self._metrics(msg.metrics, node.scope, node_id, ts,
                                                             errors, register=True)
        node.reports = bool(items)
        if node.reports:
            items.append(StatusUpdate(node_id, True, ts))
        return items, errors

    def _dbirth(self, node: _Node, device: str, external: str, msg: Payload, ts: datetime,
                errors: list[DecodeError]):
        if device not in node.devices and len(node.devices) >= MAX_DEVICES_PER_NODE:
            errors.append(DecodeError(f"edge node has more than {MAX_DEVICES_PER_NODE} devices; "
                                      f"DBIRTH of {external!r} not remembered", device_id=external))
            return [], errors
        scope = node.devices[device] = _Scope()
        items: list[Reading | StatusUpdate] = self._metrics(msg.metrics, scope, external, ts,
                                                             errors, register=True)
        items.append(StatusUpdate(external, True, ts))
        return items, errors

    def _ndeath(self, key, node: _Node | None, node_id: str, msg: Payload, ts: datetime):
        if node is None or not node.born:
            return [], []  # no session of it that we know of: nothing to end
        bd_seq = _bd_seq(msg)
        if bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            return [], []  # the will of an earlier session, delivered late: not this one's end
        node.born = False
        items: list[Reading | StatusUpdate] = [
            StatusUpdate(f"{node_id}/{dev}", False, ts)
            for dev, scope in node.devices.items() if scope.born]
        for scope in node.devices.values():
            scope.born = False
        if node.reports:
            items.append(StatusUpdate(node_id, False, ts))
        return items, []

    @staticmethod
    def _seq_problem(node: _Node, msg: Payload) -> str | None:
        if not msg.HasField("seq"):
            return "no seq"
        if msg.seq > 255:
            return f"seq {msg.seq} is not 0..255"
        if node.seq is None:
            return None if node.born else "no birth"
        expected = (node.seq + 1) % 256
        return None if msg.seq == expected else f"seq {msg.seq}, expected {expected}"

    def _rebirth(self, key: tuple[str, str], node: _Node, now: float) -> None:
        if node.rebirth_at is not None and now - node.rebirth_at < self.rebirth_interval_s:
            return  # asked already; the NBIRTH is on its way
        node.rebirth_at = now
        self.rebirths_requested += 1
        self.outgoing.append((f"{NAMESPACE}/{key[0]}/NCMD/{key[1]}", rebirth_payload()))

    # ------------------------------------------------------------------ metrics
    def _metrics(self, metrics, scope: _Scope, external: str, ts: datetime,
                 errors: list[DecodeError], *, register: bool,
                 unexplained: str | None = None) -> list[Reading | StatusUpdate]:
        out: list[Reading | StatusUpdate] = []
        if register and len(metrics) > MAX_METRICS_PER_BIRTH:
            errors.append(DecodeError(f"birth of {external!r} declares {len(metrics)} metrics; at "
                                      f"most {MAX_METRICS_PER_BIRTH} are kept", device_id=external))
        dropped = 0
        for i, m in enumerate(metrics):
            problem = None
            has_name = m.HasField("name")
            if has_name:
                name = m.name
                if type(name) is not str:  # proto2 hands back invalid UTF-8 as bytes
                    problem = f"metric #{i} has a name that is not UTF-8: {describe(name)}"
                    name = None
                elif register and i < MAX_METRICS_PER_BIRTH:
                    if m.HasField("datatype"):
                        scope.types[name] = m.datatype
                    if m.HasField("alias"):
                        other = scope.by_alias.get(m.alias)
                        if other is not None and other != name:
                            problem = (f"alias {m.alias} of {describe(name)} is already "
                                       f"{describe(other)} in this birth; aliases must be unique")
                        else:
                            scope.by_alias[m.alias] = name
            elif m.HasField("alias"):
                name = scope.by_alias.get(m.alias)
                if name is None:
                    problem = (f"metric alias {m.alias} is in no birth certificate of {external!r}"
                               if unexplained is None else
                               f"metric alias {m.alias} cannot be resolved: {unexplained}")
            else:
                name = None
                problem = f"metric #{i} has neither a name nor an alias"
            if problem is None:
                assert name is not None
                resolved = self.resolve(name)
                if resolved.control:
                    continue
                if resolved.metric is None:
                    problem = (f"unknown metric {describe(name, 60)}: neither it nor its last '/' "
                               "segment is a catalogue metric; map it in [sparkplug] metric_map")
                elif m.is_null:
                    continue  # the edge says the value is unavailable: nothing to store
                else:
                    datatype = m.datatype if m.HasField("datatype") else scope.types.get(name)
                    value, problem = _value(m, datatype, name)
                    if problem is None:
                        when = ts
                        if m.HasField("timestamp"):
                            when = _ms_to_dt(m.timestamp)
                            if when is None:
                                problem = (f"metric {describe(name, 60)} timestamp {m.timestamp} "
                                           "is past the year 9999")
                        if when is not None and value is not None:
                            reading = Reading.of(external, resolved.metric, value, when)
                            out.append(reading)
                            if self.on_reading is not None:
                                self.on_reading(external, resolved.metric, reading.value)
                            continue
            if len(errors) < MAX_ERRORS:
                errors.append(DecodeError(problem, field=_field(name), device_id=external))
            else:
                dropped += 1
        if dropped:
            errors.append(DecodeError(f"{dropped} more metric(s) of this message were rejected",
                                      device_id=external))
        return out


def _field(name: str | None) -> str | None:
    if name is None:
        return None
    return name if len(name) <= 64 else name[:61] + "..."


def _bd_seq(msg: Payload) -> int | None:
    for m in msg.metrics:
        if m.HasField("name") and m.name == BD_SEQ:
            kind = m.WhichOneof("value")
            if kind == "long_value":
                return m.long_value
            if kind == "int_value":
                return m.int_value
    return None


def _value(m, datatype: int | None, name: str) -> tuple[float | None, str | None]:
    """The metric's value as a float, or why it cannot be one."""
    kind = m.WhichOneof("value")
    if datatype is not None and datatype not in _NUMERIC:
        what = DATATYPES.get(datatype, f"unknown datatype {datatype}")
        return None, (f"metric {describe(name, 60)} is a {what}; only numbers and booleans can "
                      "be stored")
    if kind == "boolean_value":
        return (1.0 if m.boolean_value else 0.0), None
    if kind in ("int_value", "long_value"):
        raw = m.int_value if kind == "int_value" else m.long_value
        bits = _SIGNED_BITS.get(datatype or 0)
        if bits is not None:
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return float(raw), None
    if kind == "float_value":
        return m.float_value, None
    if kind == "double_value":
        return m.double_value, None
    if kind is None:
        return None, f"metric {describe(name, 60)} carries no value (and is_null is not set)"
    return None, (f"metric {describe(name, 60)} carries a {kind.removesuffix('_value')} value; "
                  "only numbers and booleans can be stored")


# ---------------------------------------------------------------------- what we publish
def rebirth_payload(ms: int | None = None) -> bytes:
    """An NCMD asking an edge node to publish its births again (``Node Control/Rebirth``)."""
    msg = Payload(timestamp=ms if ms is not None else _now_ms())
    m = msg.metrics.add()
    m.name, m.datatype, m.boolean_value = REBIRTH_METRIC, BOOLEAN, True
    return msg.SerializeToString()


def command_payload(name: str, alias: int | None, datatype: int | None, value: Any,
                    ms: int | None = None) -> bytes:
    """A DCMD writing ``value`` to one metric, in the datatype its birth declared."""
    msg = Payload(timestamp=ms if ms is not None else _now_ms())
    m = msg.metrics.add()
    m.name = name
    if alias is not None:
        m.alias = alias
    if datatype is None:
        datatype = BOOLEAN if isinstance(value, bool) else DOUBLE
    m.datatype = datatype
    if datatype == BOOLEAN:
        m.boolean_value = bool(value)
    elif datatype == FLOAT:
        m.float_value = float(value)
    elif datatype == DOUBLE:
        m.double_value = float(value)
    elif datatype in (INT64, UINT32, UINT64, 13):  # UInt32 in long_value, as Tahu does
        m.long_value = round(float(value)) & (2**64 - 1)
    elif datatype in (INT8, INT16, INT32, UINT8, UINT16):
        m.int_value = round(float(value)) & (2**32 - 1)
    else:
        raise ValueError(f"metric {name!r} is a {DATATYPES.get(datatype, datatype)}; a command "
                         "can write numbers and booleans only")
    return msg.SerializeToString()


def state_payload(online: bool, ms: int) -> bytes:
    """A host application's STATE (Sparkplug 3.0 §7.4: JSON, retained, QoS 1)."""
    return b'{"online": %s, "timestamp": %d}' % (b"true" if online else b"false", ms)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
