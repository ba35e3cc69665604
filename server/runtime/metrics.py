"""Prometheus metrics: one registry per application (no module-level global registry)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from server import keys

logger = logging.getLogger(__name__)

StatsSource = Callable[[], Mapping[str, Any]]


class PollerStats(Collector):
    """The pollers' own counters, read at scrape time: each Modbus gateway
    (:class:`server.polling.modbus.GatewayStats`) and each third-party polling adapter
    (:class:`server.polling.adapters.AdapterStats`). They keep plain counters in their hot
    loops; this turns a snapshot of them into metric families when Prometheus asks."""

    def __init__(self) -> None:
        self.gateways: StatsSource | None = None
        self.adapters: StatsSource | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        gateways = self.gateways() if self.gateways else {}
        adapters = self.adapters() if self.adapters else {}
        yield from _families("ioc_modbus_gateway", "gateway", gateways, (
            ("connected", "gauge", "1 while the gateway's TCP link is up",
             lambda s: 1 if s.connected else 0),
            ("polls", "counter", "Unit polls attempted", lambda s: s.polls),
            ("poll_failures", "counter", "Unit polls that got no usable answer (of the attempted)",
             lambda s: s.failures),
            ("reconnects", "counter", "Links re-established after a loss", lambda s: s.reconnects),
            ("overruns", "counter", "Poll slots skipped because the gateway or ingest fell behind",
             lambda s: s.overruns),
        ))
        units = GaugeMetricFamily("ioc_modbus_units", "Modbus units by state (stopped: a "
                                  "configuration error, not polled until restart)",
                                  labels=["gateway", "state"])
        for name, st in sorted(gateways.items()):
            units.add_metric([name, "online"], st.units_online)
            units.add_metric([name, "offline"], st.units_offline)
            units.add_metric([name, "stopped"], st.units_stopped)
        yield units
        yield from _families("ioc_adapter", "adapter", adapters, (
            ("up", "gauge", "1 while the adapter's last poll succeeded",
             lambda s: 1 if s.state == "polling" else 0),
            ("polls", "counter", "Successful polls", lambda s: s.polls),
            ("poll_failures", "counter", "Failed polls and connects (transient, credentials, "
             "configuration, timeouts)", lambda s: s.failures),
            ("readings", "counter", "Readings the adapter returned", lambda s: s.readings),
            ("skipped_polls", "counter", "Poll slots skipped because a poll or ingest took "
             "too long", lambda s: s.skipped),
            ("devices", "gauge", "Devices bound to the adapter or named in its readings",
             lambda s: s.devices),
        ))
        state = GaugeMetricFamily("ioc_adapter_state", "1 for the adapter's current state "
                                  "(polling, retrying, auth_failed, stopped, starting)",
                                  labels=["adapter", "state"])
        for kind, st in sorted(adapters.items()):
            state.add_metric([kind, st.state], 1)
        yield state


def _families(prefix: str, label: str, stats: Mapping[str, Any], specs) -> Iterator[Any]:
    for suffix, type_, doc, value in specs:
        cls = GaugeMetricFamily if type_ == "gauge" else CounterMetricFamily
        family = cls(f"{prefix}_{suffix}", doc, labels=[label])
        for name, st in sorted(stats.items()):
            family.add_metric([name], value(st))
        yield family


class Registry:
    """Every metric the server exports, created against a private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes, CPU seconds, open fds: what an operator watches for
        # leaks, as every Prometheus client exports by default (ours is a private registry).
        ProcessCollector(registry=r)
        # Modbus gateways and polling adapters register their stats() here when they start.
        self.pollers = PollerStats()
        r.register(self.pollers)
        self.readings_received = Counter(
            "ioc_readings_received", "Readings accepted into the ingest queue", ["source"],
            registry=r)
        self.readings_stored = Counter(
            "ioc_readings_stored", "Readings committed to telemetry", registry=r)
        self.readings_duplicate = Counter(
            "ioc_readings_duplicate", "Readings already stored (same device, metric, ts)",
            registry=r)
        self.dead_letters = Counter(
            "ioc_dead_letters", "Inputs rejected to the dead-letter table", ["source", "reason"],
            registry=r)
        # Who sends garbage (server/ingest/deadletters.py): bounded label values.
        self.dead_letters_by_device = Counter(
            "ioc_dead_letters_by_device", "Dead letters by the device they name", ["device"],
            registry=r)
        self.dead_letter_bytes = Counter(
            "ioc_dead_letter_bytes", "Raw bytes of the inputs refused to dead letters", ["source"],
            registry=r)
        self.queue_depth = Gauge(
            "ioc_ingest_queue_depth", "Readings waiting for the writer", registry=r)
        self.queue_capacity = Gauge(
            "ioc_ingest_queue_capacity", "Readings the queue holds before backpressure",
            registry=r)
        self.batch_size = Histogram(
            "ioc_ingest_batch_size", "Readings per committed batch",
            buckets=(1, 10, 100, 500, 1000, 5000, 10000, 20000, 50000), registry=r)
        self.commit_seconds = Histogram(
            "ioc_ingest_commit_seconds", "Time to commit one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.writer_errors = Counter(
            "ioc_ingest_writer_errors", "Batches that failed to commit and were retried",
            registry=r)
        self.db_writable = Gauge(
            "ioc_database_writable", "1 when the last ingest commit succeeded", registry=r)
        self.mqtt_connected = Gauge(
            "ioc_mqtt_connected", "1 while the MQTT session is up", registry=r)
        self.mqtt_messages = Counter(
            "ioc_mqtt_messages", "MQTT messages received", ["adapter"], registry=r)
        self.http_requests = Counter(
            "ioc_http_requests", "HTTP requests served", ["method", "status"], registry=r)
        # The websocket hub (server/live/hub.py).
        self.ws_clients = Gauge(
            "ioc_ws_clients", "Websocket clients connected", registry=r)
        self.ws_messages_sent = Counter(
            "ioc_ws_messages_sent", "Websocket messages sent to clients", ["type"], registry=r)
        self.ws_conflated = Counter(
            "ioc_ws_conflated", "State updates merged into a newer one for a client that was "
            "behind (latest wins)", registry=r)
        self.ws_disconnected_slow = Counter(
            "ioc_ws_disconnected_slow", "Websocket clients disconnected for staying too far "
            "behind", registry=r)
        self.ws_queued = Gauge(
            "ioc_ws_queued", "Messages waiting in websocket clients' queues", registry=r)
        # The notification outbox (server/notify).
        self.notify_delivered = Counter(
            "ioc_notifications_delivered", "Notifications delivered", ["channel"], registry=r)
        self.notify_attempt_errors = Counter(
            "ioc_notification_attempt_errors", "Delivery attempts that failed (and will be retried)",
            ["channel"], registry=r)
        self.notify_fallbacks = Counter(
            "ioc_notification_fallbacks", "Notifications moved on to the next channel after "
            "this one kept failing", ["channel"], registry=r)
        self.notify_failed = Counter(
            "ioc_notifications_failed", "Notifications that failed on every channel of their "
            "recipient (last channel as label)", ["channel"], registry=r)
        self.notify_pending = Gauge(
            "ioc_notification_outbox_pending", "Outbox rows waiting for delivery (deferred ones too)",
            ["channel"], registry=r)
        self.notify_oldest_due_s = Gauge(
            "ioc_notification_outbox_oldest_due_seconds",
            "How long the most overdue pending row has been due", registry=r)
        self.notify_latency = Histogram(
            "ioc_notification_delivery_seconds",
            "Enqueue to delivery (retries, fallbacks and quiet-hours deferral included)", ["channel"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600), registry=r)
        self.alarm_escalations = Counter(
            "ioc_alarm_escalations", "Alarms escalated for want of an acknowledgement", ["level"],
            registry=r)
        self.commands = Counter(
            "ioc_commands", "Device commands finished, by route and outcome", ["route", "status"],
            registry=r)
        self.commands_queued = Gauge(
            "ioc_commands_queued", "Commands accepted and not yet finished (offline devices' too)",
            registry=r)
        self.telemetry_points = Gauge(
            "ioc_telemetry_points", "Readings (rollup rows for hourly and daily) kept per tier: raw "
            "is the row store (planner's estimate), compressed the closed days' segments",
            ["tier"], registry=r)
        self.telemetry_bytes = Gauge(
            "ioc_telemetry_bytes", "Bytes on disk per tier (heap, TOAST and indexes)", ["tier"],
            registry=r)


# From the catalogue and a running total only (no scan of the data): cheap on every scrape.
TIERS_SQL = """
with parts as (
    select c.oid, greatest(c.reltuples, 0) as n from pg_inherits i
    join pg_class c on c.oid = i.inhrelid where i.inhparent = 'telemetry'::regclass
)
select 'raw' as tier, coalesce(sum(n), 0)::float8 as points,
       coalesce(sum(pg_total_relation_size(oid)), 0)::float8 as bytes from parts
union all
select 'compressed', coalesce((select (value #>> '{}')::float8 from ioc_meta
                               where key = 'compressed_points'), 0),
       pg_total_relation_size('telemetry_segments')::float8
union all
select 'hourly', greatest(reltuples, 0)::float8, pg_total_relation_size(oid)::float8
from pg_class where oid = 'telemetry_hourly'::regclass
union all
select 'daily', greatest(reltuples, 0)::float8, pg_total_relation_size(oid)::float8
from pg_class where oid = 'telemetry_daily'::regclass
"""


async def _telemetry_tiers(app: web.Application, reg: Registry) -> None:
    pool = app.get(keys.DB)
    if pool is None:
        return
    try:
        async with pool.acquire(timeout=2) as conn:
            rows = await conn.fetch(TIERS_SQL, timeout=2)
    except Exception as err:  # a scrape still answers with everything else
        logger.debug("telemetry tier sizes unavailable: %s", err)
        return
    for r in rows:
        reg.telemetry_points.labels(r["tier"]).set(r["points"])
        reg.telemetry_bytes.labels(r["tier"]).set(r["bytes"])


async def metrics_handler(request: web.Request) -> web.Response:
    reg: Registry = request.app[keys.METRICS]
    await _telemetry_tiers(request.app, reg)
    body = generate_latest(reg.registry)
    resp = web.Response(body=body)
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    resp.charset = "utf-8"
    return resp
