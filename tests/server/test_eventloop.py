"""The loop the server runs on: uvloop by default, asyncio's own on request."""

from __future__ import annotations

import asyncio

import uvloop

from server.runtime.eventloop import new_event_loop
from server.settings import Settings


def test_the_server_runs_on_uvloop_unless_told_otherwise():
    assert Settings().event_loop == "uvloop"
    loop = new_event_loop(Settings().event_loop)
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()
    loop = new_event_loop(Settings(event_loop="asyncio").event_loop)
    try:
        assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
