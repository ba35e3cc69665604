"""Cleanup contexts for the pipeline: directory + ingest writer, MQTT session, pollers.

aiohttp runs these in order at start and in reverse at shutdown, so the MQTT session
stops receiving before the writer drains, and the writer drains before the pool closes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from adapters.registry import discover
from server import keys
from server.ingest.directory import Directory
from server.ingest.downtime import NONE as NO_DOWNTIME
from server.ingest.maintenance import Maintenance
from server.ingest.routing import MqttIngest
from server.ingest.takeover import IngestShare
from server.ingest.writer import Ingest
from server.mqtt.link import MqttLink

logger = logging.getLogger(__name__)

async def directory_ctx(app: web.Application) -> AsyncIterator[None]:
    """The in-memory device directory, first: the hub, rules and ingest all read it."""
    directory = Directory()
    async with app[keys.DB].acquire() as conn:
        await directory.load(conn)
    app[keys.DIRECTORY] = directory
    yield


async def ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    """The writer, and after it whoever wants each committed batch.

    The alarm engine and the websocket hub start before this context, so at shutdown the
    writer drains (and hands its last batches to them) while they are still running.
    """
    settings = app[keys.SETTINGS]
    directory = app[keys.DIRECTORY]
    ingest = Ingest(app[keys.DB], directory, settings.ingest, app[keys.METRICS])
    app[keys.INGEST] = ingest
    maintenance = Maintenance(app[keys.DB], directory, settings.ingest,
                              downtime=app.get(keys.DOWNTIME, NO_DOWNTIME), storage=settings.storage)
    for key in (keys.ALARMS, keys.HUB):
        consumer = app.get(key)
        if consumer is not None:
            ingest.listeners.append(consumer.on_batch)
            maintenance.status_listeners.append(consumer.on_status)
    await ingest.start()
    await maintenance.start()
    try:
        yield
    finally:
        await maintenance.stop()
        await ingest.stop()




async def mqtt_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    if not settings.mqtt_url:
        logger.warning("IOC_MQTT_URL is not set: MQTT ingest and commands are off")
        app[keys.MQTT] = None
        yield
        return
    registry = discover()
    adapters = {}
    for kind, cls in registry.push_adapters().items():
        # ``enabled`` is ours, the rest is the adapter's own (strict) configuration.
        config = dict(settings.adapters.get(kind, {}))
        if config.pop("enabled", True) is not False:
            adapters[kind] = cls(config)
    group = settings.mqtt_shared_group

    def make_handler() -> MqttIngest:
        return MqttIngest(adapters, app[keys.INGEST], app[keys.METRICS], group)

    handler = make_handler()
    app[keys.MQTT_INGEST] = handler
    gauge = app[keys.METRICS].mqtt_connected
    # Scale-out: processes sharing ingest watch each other and serve a dead one's share.
    from server.mqtt.dynsec import mqtt_tls

    tls = mqtt_tls(settings)  # mqtts://: every link of this process uses it
    share = IngestShare(settings.mqtt_url, group, settings.mqtt_client_id, app[keys.DB],
                        make_handler) if group else None

    def connected(up: bool) -> None:
        gauge.set(1 if up else 0)
        if share is not None:
            share.ingest_connected(up)
        else:  # the Sparkplug host STATE needs the will, which a shared ingest uses itself
            handler.link_up(up)

    link = MqttLink(settings.mqtt_url, settings.mqtt_client_id,
                    subscriptions=handler.subscriptions, on_messages=handler.handle_batch,
                    on_connected=connected, will=share.will if share else handler.will, tls=tls)
    handler.link = link
    app[keys.MQTT] = link
    if share is not None:
        await share.start(link)
    await link.start()
    try:
        yield
    finally:
        if share is None:
            await handler.farewell()
        await link.stop()
        if share is not None:
            await share.stop()
