"""MQTT 3.1.1 framing: the few packet encodings the server's session writes.

Only what :mod:`server.mqtt.session` and :mod:`server.mqtt.link` need (CONNECT, SUBSCRIBE,
PUBLISH, PUBACK); parsing of incoming frames is in the session's ``data_received``.
"""

from __future__ import annotations

import struct

import aiomqtt

CONNACK_ERRORS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
PUBACK = struct.Struct("!BBH")
U16 = struct.Struct("!H")



class MqttError(aiomqtt.MqttError, ConnectionError):
    """The broker refused us, broke the protocol, or the connection is gone."""



def varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varlen(len(body)) + body


def string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return U16.pack(len(b)) + b
