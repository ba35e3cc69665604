"""Devices the server asks rather than hears: Modbus gateways (``modbus``) and third-party
polling adapters (``adapters``, the supervisor). Their readings go to
:mod:`server.ingest.writer` like MQTT's.
"""
