"""Topic names and filters: wildcard matching, one compiled router for many filters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit


class Topic(str):
    """A topic name; ``.value`` and ``.matches()`` as on aiomqtt's Topic."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return str(self)

    def matches(self, topic_filter: str) -> bool:
        return topic_matches(topic_filter, self)



def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard matching (``+`` one level, ``#`` the rest; ``$`` topics only literally)."""
    return levels_match(topic_filter.split("/"), topic.split("/"))


def levels_match(filter_levels: list[str], levels: list[str]) -> bool:
    """:func:`topic_matches` on topics already split at ``/`` (split filters once)."""
    if levels[0][:1] == "$" and filter_levels[0] in ("+", "#"):
        return False
    n = len(levels)
    for i, want in enumerate(filter_levels):
        if want == "#":
            return True
        if i >= n or (want != "+" and want != levels[i]):
            return False
    return len(filter_levels) == n


def filter_pattern(topic_filter: str) -> str:
    """A regular expression matching exactly the topics :func:`topic_matches` matches."""
    levels = topic_filter.split("/")
    pattern = r"(?!\$)" if levels[0] in ("+", "#") else ""
    for i, level in enumerate(levels):
        if level == "#":  # the parent level too: "a/#" matches "a"
            pattern += "(?:/.*)?" if i else ".*"
            break
        pattern += ("/" if i else "") + ("[^/]*" if level == "+" else re.escape(level))
    return pattern


class TopicRouter:
    """Which of several filters (the first, in order) a topic matches: one regular
    expression for all of them, a single C-level match per message."""

    def __init__(self, filters: Sequence[str]) -> None:
        self.filters = list(filters)
        joined = "|".join(f"({filter_pattern(f)})" for f in self.filters)
        self._match = re.compile(joined or r"(?!)", re.DOTALL).fullmatch

    def __call__(self, topic: str) -> int | None:
        """The index of the first matching filter, or None."""
        m = self._match(topic)
        return None if m is None else m.lastindex - 1


def parse_mqtt_url(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp", "mqtts"):
        raise ValueError(f"IOC_MQTT_URL must start with mqtt:// or mqtts://, got {url!r}")
    return {
        "hostname": parts.hostname or "127.0.0.1",
        "port": parts.port or (8883 if parts.scheme == "mqtts" else 1883),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
