"""The websocket hub: viewport subscriptions, snapshots, conflated state deltas, alarms.

Stub: the interface other parts of the server call. Issue 5 fills it in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from server import keys


class Hub:
    def on_batch(self, committed) -> None:
        """An ingest listener: state deltas for the devices of a committed batch."""

    def on_status(self, changes: list[tuple[int, str]]) -> None:
        """Status changes found by the staleness scan: [(device_key, status), ...]."""

    def publish_alarm(self, alarm: dict[str, Any]) -> None:
        """An alarm transition (the alarm as the API shows it), to alarm subscribers."""

    def send_to_crew(self, crew: str, message: dict[str, Any]) -> bool:
        """A message to the connected clients of one crew; False when none is connected."""
        return False


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    app[keys.HUB] = Hub()
    yield
