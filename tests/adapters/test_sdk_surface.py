"""The SDK's public surface is pinned (httpx ``tests/test_exported_members.py`` style).

Integrators import only ``adapters.sdk``; changing this list is a contract change and
should be a deliberate edit here, reviewed as such.
"""

from __future__ import annotations

import importlib

import adapters.sdk

PINNED = [
    "AdapterError",
    "AuthError",
    "ConfigError",
    "DecodeError",
    "DeviceBinding",
    "IotClass",
    "PollingAdapter",
    "PushAdapter",
    "Quality",
    "Reading",
    "StatusUpdate",
    "TransientError",
    "utcnow",
]


def test_all_is_pinned() -> None:
    assert adapters.sdk.__all__ == PINNED


def test_every_name_is_importable() -> None:
    module = importlib.import_module("adapters.sdk")
    for name in PINNED:
        assert getattr(module, name) is not None, name
        exec(f"from adapters.sdk import {name}", {})  # the form integrators write


def test_errors_form_one_tree() -> None:
    from adapters.sdk import AdapterError

    for name in ("AuthError", "ConfigError", "DecodeError", "TransientError"):
        assert issubclass(getattr(adapters.sdk, name), AdapterError), name
