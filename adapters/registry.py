"""Adapter discovery through the ``ioc.adapters`` entry-point group.

Built-in adapters register the same way as third-party ones (see pyproject.toml), so the
boundary is exercised every day. A registry belongs to one application: it is built in
``create_app`` and never at import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from adapters.sdk import PollingAdapter, PushAdapter

logger = logging.getLogger(__name__)

GROUP = "ioc.adapters"
AdapterClass = type[PollingAdapter] | type[PushAdapter]


class RegistryError(Exception):
    """Two adapters claim one kind, or an entry point does not load to an adapter class."""


@dataclass
class AdapterRegistry:
    classes: dict[str, AdapterClass] = field(default_factory=dict)

    def register(self, kind: str, cls: AdapterClass) -> None:
        if not (isinstance(cls, type) and issubclass(cls, PollingAdapter | PushAdapter)):
            raise RegistryError(f"adapter {kind!r}: {cls!r} is not a PollingAdapter or PushAdapter")
        if kind in self.classes and self.classes[kind] is not cls:
            raise RegistryError(
                f"duplicate adapter kind {kind!r}: {self.classes[kind].__module__} and "
                f"{cls.__module__} both claim it"
            )
        declared = getattr(cls, "kind", kind)
        if declared != kind:
            raise RegistryError(
                f"adapter class {cls.__qualname__} declares kind {declared!r} but its entry point "
                f"is named {kind!r}; they must be the same"
            )
        self.classes[kind] = cls

    def push_adapters(self) -> dict[str, type[PushAdapter]]:
        return {k: c for k, c in self.classes.items() if issubclass(c, PushAdapter)}

    def polling_adapters(self) -> dict[str, type[PollingAdapter]]:
        return {k: c for k, c in self.classes.items() if issubclass(c, PollingAdapter)}


def discover(eps: list[EntryPoint] | None = None) -> AdapterRegistry:
    registry = AdapterRegistry()
    found = list(entry_points(group=GROUP)) if eps is None else eps
    seen: dict[str, str] = {}
    for ep in found:
        if ep.name in seen and seen[ep.name] != ep.value:
            raise RegistryError(
                f"duplicate adapter kind {ep.name!r}: {seen[ep.name]} and {ep.value}")
        seen[ep.name] = ep.value
        try:
            cls = ep.load()
        except Exception as err:
            raise RegistryError(f"adapter {ep.name!r} ({ep.value}) failed to load: {err}") from err
        registry.register(ep.name, cls)
    return registry
