"""Counter-based randomness: a value is a hash of (seed, device, stream, tick), never state.

Why not ``numpy.random.Generator``: a generator's output depends on how many numbers were
drawn before, so adding a device, a metric or a reporting tick would change every other
device's values. Hashing makes each device's value at second ``t`` a pure function of
``(seed, device id, stream, t)``: two runs with the same seed agree, a device keeps its
personality when the city grows, and faults or publishing order change nothing.

The mixer is SplitMix64 (Steele, Lea, Flood 2014), vectorised over uint64 arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))
_MASK = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def device_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    """One 64-bit key per device id, stable across runs and city sizes."""
    key = str(seed).encode()
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "big")
         for i in ids),
        dtype=np.uint64, count=len(ids),
    )


def _stream(keys: np.ndarray, salt: int, tick: int) -> np.ndarray:
    s = np.array([((salt & 0xFFFFFF) << 40 ^ (tick & 0xFFFFFFFFFF)) & _MASK], dtype=np.uint64)
    return _mix(keys ^ _mix(s))


def uniform(keys: np.ndarray, salt: int, tick: int = 0) -> np.ndarray:
    """Uniform in [0, 1), one per key; ``tick`` = 0 for per-device constants."""
    return (_stream(keys, salt, tick) >> _S11).astype(np.float64) * (1.0 / (1 << 53))


def normal(keys: np.ndarray, salt: int, tick: int = 0) -> np.ndarray:
    """Standard normal, one per key (Box-Muller on two independent streams)."""
    u1 = 1.0 - uniform(keys, salt, tick)  # (0, 1]: log is finite
    u2 = uniform(keys, salt + 0x5151, tick)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def between(keys: np.ndarray, salt: int, low: float, high: float) -> np.ndarray:
    """A per-device constant uniform in [low, high)."""
    return low + (high - low) * uniform(keys, salt)
