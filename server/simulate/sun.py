"""Sunrise and sunset per local day, and running totals of night length, for one place.

Streetlights burn from sunset to sunrise, so a lamp's ``burning_hours`` and ``energy_kwh``
at time ``t`` are sums over every night since it was installed. Keeping those sums in a
table (one astral computation per day, ~60 µs) makes the counters a pure function of
``t``: they never jump back when the simulator restarts, and two runs agree.

One place serves the whole city: across a 20 km city sunset moves by under a minute,
less than the per-lamp photocell spread the patterns add on top.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import sun

#: Counters start at this local date; earlier times read as if the city were new then.
EPOCH = date(2024, 1, 1)


class NightTable:
    """Sun times per local day index ``k`` (days since :data:`EPOCH`), extended on demand."""

    def __init__(self, lon: float, lat: float, tz: str | ZoneInfo) -> None:
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self._observer = Observer(latitude=lat, longitude=lon)
        self._midnight: list[float] = []
        self._rise: list[float] = []
        self._set: list[float] = []
        # _cum[k] = Σ_{j<k} (sunrise[j+1] - sunset[j]): total night seconds before day k's.
        self._cum: list[float] = [0.0]

    def day_index(self, t: float) -> int:
        """The local day of epoch time ``t`` (≥ 1 so that day ``k - 1`` always exists)."""
        local = datetime.fromtimestamp(t, self.tz).date()
        return max(1, (local - EPOCH).days)

    def _extend(self, k: int) -> None:
        while len(self._rise) <= k + 1:
            d = EPOCH + timedelta(days=len(self._rise))
            s = sun(self._observer, date=d, tzinfo=self.tz)
            self._midnight.append(datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp())
            self._rise.append(s["sunrise"].timestamp())
            self._set.append(s["sunset"].timestamp())
        while len(self._cum) <= k:
            j = len(self._cum) - 1
            self._cum.append(self._cum[j] + self._rise[j + 1] - self._set[j])

    def midnight(self, k: int) -> float:
        self._extend(k)
        return self._midnight[k]

    def sunrise(self, k: int) -> float:
        self._extend(k)
        return self._rise[k]

    def sunset(self, k: int) -> float:
        self._extend(k)
        return self._set[k]

    def nights_before(self, k: int) -> float:
        """Seconds of darkness in the nights that started before day ``k`` (0 … k-1)."""
        self._extend(k)
        return self._cum[k]
