"""The adapters' copy of the metric names is the server's catalogue, name for name."""

from __future__ import annotations

from adapters.catalog import METRIC_NAMES
from server.store import catalog


def test_the_copy_matches_the_catalogue() -> None:
    missing = catalog.METRIC_NAMES - METRIC_NAMES
    extra = METRIC_NAMES - catalog.METRIC_NAMES
    assert not missing, f"add to adapters/catalog.py: {sorted(missing)}"
    assert not extra, f"not in server/store/catalog.py: {sorted(extra)}"
