"""Where a reading goes after the broker or a poller, in order:

1. ``routing``: an MQTT message is decoded by the push adapter whose topic filter matches;
2. ``writer``: validated against the ``directory`` (ids, metrics) and committed in batches
   with COPY, each device's latest values upserted into ``device_state`` (``state``);
   rejects go to the dead-letter table with their reason;
3. each committed batch goes on to its listeners: the alarm engine
   (:mod:`server.alarms`) and the websocket hub (:mod:`server.live`).

Beside them: ``takeover`` (scale-out: a dead process's shared subscription is served by
the others), ``maintenance`` (partitions, retention, rollups, device staleness),
``downtime`` (how long nobody listened, so a restart does not blame devices) and
``contexts`` (the aiohttp cleanup contexts that start and stop all of it in order).
"""
