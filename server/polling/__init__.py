"""Devices the server asks rather than hears: Modbus gateways (``modbus``) and third-party
polling adapters (``adapters``, the supervisor). Both keep time the same way, with
``core`` (the poll grid, backoff, availability, once-per-streak logging). Their readings go
to :mod:`server.ingest.writer` like MQTT's.
"""
