"""The fault tests' publishers never outlive their test."""

import pytest

from tests.faults.helpers import publishers


@pytest.fixture(autouse=True)
def _stop_publishers():
    """A failed test must not leave its publisher feeding the next test's server."""
    yield
    while publishers:
        publishers.pop().stop()
