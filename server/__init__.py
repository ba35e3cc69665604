"""ioc-server: the process that assembles everything.

A reading's way through the packages, in order:

    mqtt/      the broker connection (one persistent session)   ─┐
    polling/   Modbus gateways and polling adapters              ─┤
    ingest/    decode → validate → COPY into PostgreSQL ◄─────────┘
      ├─► alarms/    rules evaluated on each committed batch → alarms → notify/
      └─► live/      the websocket hub → the map and crew pages
    commands/  operators' commands back out over MQTT, Modbus or an adapter

Around them: ``api/`` (the REST endpoints; ``api/ogc/`` the OGC API – Features and Tiles at
``/ogc``), ``http/`` (the application and its plumbing),
``store/`` (schema, pools, history), ``registry/`` (devices, import, credentials),
``runtime/`` (event loop, metrics), ``cli/`` (every ``ioc`` command) and ``simulate/``.
``settings.py`` is the configuration, ``keys.py`` every piece of app state, ``errors.py``
the domain's errors and ``vocab.py`` its enumerations.
"""
