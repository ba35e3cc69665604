"""Quiet hours: a daily local-time window in which low-priority notifications wait.

Pure (no I/O). Times are wall-clock times in the city's zone, so the window follows
daylight saving where the zone has it. A window whose start is after its end spans
midnight (22:00-06:00); start == end means no window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from server.settings import QuietHours


@dataclass(frozen=True, slots=True)
class QuietWindow:
    start: time
    end: time
    tz: ZoneInfo
    min_priority: int = 3
    enabled: bool = True

    @classmethod
    def from_settings(cls, s: QuietHours) -> QuietWindow:
        return cls(s.start, s.end, ZoneInfo(s.timezone), s.min_priority, s.enabled)

    def contains(self, now: datetime) -> bool:
        if not self.enabled or self.start == self.end:
            return False
        t = now.astimezone(self.tz).time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def _end_on(self, day) -> datetime:
        return datetime.combine(day, self.end, tzinfo=self.tz)

    def release_at(self, now: datetime) -> datetime | None:
        """The end of the window ``now`` is in (UTC), or None outside the window."""
        if not self.contains(now):
            return None
        local = now.astimezone(self.tz)
        end = self._end_on(local.date())
        if end <= local:
            end = self._end_on(local.date() + timedelta(days=1))
        return end.astimezone(UTC)

    def last_end(self, now: datetime) -> datetime | None:
        """The most recent end of the window at or before ``now`` (UTC)."""
        if not self.enabled or self.start == self.end:
            return None
        local = now.astimezone(self.tz)
        end = self._end_on(local.date())
        if end > local:
            end = self._end_on(local.date() - timedelta(days=1))
        return end.astimezone(UTC)

    def defers(self, alarm: dict[str, Any]) -> bool:
        """Whether this alarm's notifications may wait: low priority and never critical."""
        if alarm.get("severity") == "critical":
            return False
        priority = alarm.get("priority")
        return priority is not None and int(priority) >= self.min_priority
