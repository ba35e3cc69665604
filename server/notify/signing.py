"""Standard Webhooks signatures (symmetric, ``v1``): sign what we send, verify what we get.

Spec (standardwebhooks.com, v1.0.0): the signed content is ``{webhook-id}.{webhook-timestamp}.
{body}``, HMAC-SHA256 with the secret's bytes (``whsec_`` + base64), sent as
``webhook-signature: v1,<base64>``; several space-separated signatures allow key rotation.
The timestamp is integer Unix seconds of the attempt, so every retry is signed afresh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 5 * 60


class SignatureError(ValueError):
    """A webhook failed verification; the message says why."""


def new_secret(nbytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def decode_secret(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None


def check_secret(secret: str) -> None:
    """ValueError unless ``secret`` is ``whsec_`` + base64 of 24 to 64 bytes (the spec's range)."""
    key = decode_secret(secret)
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret holds 24 to 64 bytes, this one {len(key)}")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt."""
    if "." in msg_id:
        # The id is one of the dot-separated fields of the signed content.
        raise ValueError("a webhook id must not contain '.'")
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str | None, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = int(time.time() if now is None else now)
    out = {"webhook-id": msg_id, "webhook-timestamp": str(ts)}
    if secret:
        out["webhook-signature"] = sign(secret, msg_id, ts, body)
    return out


def verify(secret: str, hdrs, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> None:
    """Raise SignatureError unless one ``v1`` signature matches and the timestamp is fresh."""
    msg_id = hdrs.get("webhook-id")
    raw_ts = hdrs.get("webhook-timestamp")
    sigs = hdrs.get("webhook-signature")
    if not (msg_id and raw_ts and sigs):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(raw_ts)
    except ValueError:
        raise SignatureError(f"webhook-timestamp {raw_ts!r} is not integer seconds") from None
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        raise SignatureError(f"webhook-timestamp {ts} is outside the {tolerance_s:.0f} s tolerance")
    expected = sign(secret, msg_id, ts, body).partition(",")[2]
    for candidate in sigs.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise SignatureError("no v1 signature matches")
