"""The sun's position, sunrise and sunset: NOAA's solar calculator, vectorised over numpy.

Each lamp has its own position, so this works on arrays of times and coordinates at once
(one call per batch, not one per lamp). Accuracy is about a minute between ±72° latitude
(NOAA, "General Solar Position Calculations"), far finer than lamps' photocells, whose
spread the lighting rule's margin absorbs. ``h0 = -0.833°`` is the standard altitude of
sunrise and sunset: refraction at the horizon plus the sun's radius.
"""

from __future__ import annotations

import numpy as np

H0 = -0.833  # degrees: the sun's upper limb on the horizon, refraction included
_DEG = np.pi / 180.0


def _declination_eqtime(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solar declination (degrees) and the equation of time (minutes) at epoch seconds t."""
    jc = (np.asarray(t, dtype=np.float64) / 86400.0 + 2440587.5 - 2451545.0) / 36525.0
    mean_long = np.mod(280.46646 + jc * (36000.76983 + jc * 0.0003032), 360.0)
    mean_anom = 357.52911 + jc * (35999.05029 - 0.0001537 * jc)
    ecc = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    m = mean_anom * _DEG
    centre = (np.sin(m) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
              + np.sin(2 * m) * (0.019993 - 0.000101 * jc) + np.sin(3 * m) * 0.000289)
    omega = (125.04 - 1934.136 * jc) * _DEG
    app_long = mean_long + centre - 0.00569 - 0.00478 * np.sin(omega)
    mean_obliq = 23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0
    obliq = (mean_obliq + 0.00256 * np.cos(omega)) * _DEG
    decl = np.arcsin(np.sin(obliq) * np.sin(app_long * _DEG)) / _DEG
    y = np.tan(obliq / 2) ** 2
    lo = mean_long * _DEG
    eqtime = 4.0 / _DEG * (y * np.sin(2 * lo) - 2 * ecc * np.sin(m)
                           + 4 * ecc * y * np.sin(m) * np.cos(2 * lo)
                           - 0.5 * y * y * np.sin(4 * lo) - 1.25 * ecc * ecc * np.sin(2 * m))
    return decl, eqtime


def elevation(t, lat, lon) -> np.ndarray:
    """The sun's geometric elevation in degrees at epoch seconds ``t`` (arrays broadcast)."""
    t = np.asarray(t, dtype=np.float64)
    decl, eqtime = _declination_eqtime(t)
    minutes = np.mod(t, 86400.0) / 60.0
    solar_time = np.mod(minutes + eqtime + 4.0 * np.asarray(lon, dtype=np.float64), 1440.0)
    hour_angle = (solar_time / 4.0 - 180.0) * _DEG
    la, de = np.asarray(lat, dtype=np.float64) * _DEG, decl * _DEG
    cos_zenith = np.sin(la) * np.sin(de) + np.cos(la) * np.cos(de) * np.cos(hour_angle)
    return 90.0 - np.arccos(np.clip(cos_zenith, -1.0, 1.0)) / _DEG


def sun_times(t, lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Sunrise and sunset (epoch seconds) of the local solar day containing ``t``.

    NaN where the sun does not rise or does not set that day (polar day or night).
    """
    t = np.asarray(t, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    # The local solar day: days since the epoch at the place's mean solar time.
    day = np.floor((t + lon / 360.0 * 86400.0) / 86400.0)
    noon_guess = day * 86400.0 + (720.0 - 4.0 * lon) * 60.0
    decl, eqtime = _declination_eqtime(noon_guess)
    noon = day * 86400.0 + (720.0 - 4.0 * lon - eqtime) * 60.0
    la, de = np.asarray(lat, dtype=np.float64) * _DEG, decl * _DEG
    cos_ha = (np.cos((90.0 - H0) * _DEG) / (np.cos(la) * np.cos(de))) - np.tan(la) * np.tan(de)
    with np.errstate(invalid="ignore"):
        ha = np.where(np.abs(cos_ha) <= 1.0, np.arccos(np.clip(cos_ha, -1, 1)) / _DEG, np.nan)
    return noon - 4.0 * ha * 60.0, noon + 4.0 * ha * 60.0


def daylight(t, lat, lon, margin_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(surely day, surely night) at ``t``: the sun above (below) the horizon for
    ``margin_s`` before and after ``t``. Around sunrise and sunset both are False."""
    t = np.asarray(t, dtype=np.float64)
    before = elevation(t - margin_s, lat, lon)
    after = elevation(t + margin_s, lat, lon)
    day = (before > H0) & (after > H0)
    night = (before < H0) & (after < H0)
    return day, night
