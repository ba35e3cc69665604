"""The broker connection: MQTT 3.1.1 framing (wire), one TCP session (session), topic
filters (topics), and the link that owns connect, subscribe, publish and reconnect (link).

A message arrives here first and goes next to :mod:`server.ingest.routing`.
"""
