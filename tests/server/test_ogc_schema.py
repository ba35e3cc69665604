"""/ogc's own OpenAPI 3.0 definition (the landing page's service-desc) against the live
server: schemathesis generates requests from it, valid and invalid, and no answer may be a
server error or a status, content type or header the definition does not list."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from server.http.auth import create_token_sync
from server.settings import Settings
from tests.server.test_openapi import LiveServer

EXAMPLES = 6  # per operation and mode: enough to find a crash, few enough for make test
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


@pytest.fixture
def ogc_schema(city_db_url):
    settings = Settings(database_url=city_db_url, mqtt_url=None, mqtt_client_id="ioc-ogc-schema")
    headers = {"Authorization": f"Bearer {create_token_sync(city_db_url, 'viewer', 'schemathesis')}"}
    with LiveServer(settings) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/ogc/api", headers=headers, timeout=30)
        schema.config.update(base_url=f"{server.url}/ogc", headers=headers, request_timeout=60)
        yield schema


def test_live_ogc_api_answers_as_defined(ogc_schema):
    failures: list[str] = []
    operations = 0
    calls: list[str] = []
    for result in ogc_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.generate])
            def check(case):
                calls.append(case.path)
                case.call_and_validate(checks=CHECKS)

            try:
                check()
            except Unsatisfiable:
                pass  # nothing to make invalid
            except (Exception, BaseExceptionGroup) as err:
                text = str(err)
                if "found 1 distinct failure" in text and "Got more than 8190 bytes" in text:
                    # a request line over 8 KiB (negative data for the bbox array): aiohttp's
                    # HTTP parser refuses it, in text/plain, before any handler runs
                    continue
                lines = [line for line in str(err).splitlines() if line.strip()]
                failures.append(f"{operation.label} ({mode.value}): " + "\n  ".join(lines[:14]))
    assert operations >= 14 and len(calls) > 100
    assert not failures, "\n\n".join(failures)
