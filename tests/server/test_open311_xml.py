"""Open311 GeoReport v2 through a client no one here wrote (PyPI's ``georeport``), in XML and
in JSON, checked against the request and response shapes the spec publishes: the fields of a
service, a service definition, a service request and a POST's answer, and the error list."""

from __future__ import annotations

import asyncio

import pytest
import xmltodict
from georeport import GeoReport

from server.settings import ReportsSettings
from tests.helpers import running

# GeoReport v2 (wiki.open311.org/GeoReport_v2): the fields of each answer.
SERVICE = {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"}
REQUEST = {"service_request_id", "status", "status_notes", "service_name", "service_code", "description",
           "agency_responsible", "service_notice", "requested_datetime", "updated_datetime",
           "expected_datetime", "address", "address_id", "zipcode", "lat", "long", "media_url"}
POSTED = {"service_request_id", "service_notice", "account_id"}


@pytest.fixture
def settings(city_db_url, make_settings, tmp_path):
    return make_settings(city_db_url, mqtt_url=None,
                         reports=ReportsSettings(photo_dir=tmp_path, rate_per_min=6000))


def _one_or_many(x) -> list:
    return x if isinstance(x, list) else [x]  # xmltodict: one child is a dict, several a list


async def test_open311_xml_and_json_through_a_georeport_client(settings):
    async with running(settings) as client:
        root = str(client.make_url("/open311/v2"))
        xml = GeoReport(root, output_format="xml")
        js = GeoReport(root, output_format="json")

        services = await asyncio.to_thread(xml.get_service_list)
        assert {s["service_code"] for s in services} >= {"pothole", "water_leak", "streetlight_out"}
        assert all(set(s) == SERVICE for s in services)
        assert {s["metadata"] for s in services} == {"false"} and services[0]["type"] == "realtime"
        assert [s["service_code"] for s in services] == \
            [s["service_code"] for s in await asyncio.to_thread(js.get_service_list)]
        definition = await asyncio.to_thread(xml.get_service_definition, "water_leak")
        assert definition["service_code"] == "water_leak" and "attributes" in definition

        # POST in XML (form-encoded, as the spec says); the answer is a service_requests list
        resp = await client.post("/open311/v2/requests.xml", data={
            "service_code": "water_leak", "lat": "21.5902", "long": "105.8411",
            "description": "Ống nước vỡ & phun lên đường", "email": "an@example.vn", "first_name": "An"})
        assert resp.status == 201 and resp.content_type == "text/xml"
        posted = xmltodict.parse(await resp.read())["service_requests"]["request"]
        assert set(posted) >= POSTED
        rid = posted["service_request_id"]
        # the tracking code goes to the poster only (it rates the work): in the notice, never listed
        code = posted["service_notice"].split()[2].rstrip(":")
        assert code != rid and f"/reports/{code}" in posted["service_notice"]
        assert (await asyncio.to_thread(xml.get_service_request, code))["service_request_id"] == rid

        req = await asyncio.to_thread(xml.get_service_request, rid)
        assert set(req) == REQUEST
        assert req["status"] == "open" and req["service_code"] == "water_leak"
        assert req["description"] == "Ống nước vỡ & phun lên đường"
        assert float(req["lat"]) == pytest.approx(21.5902) and float(req["long"]) == pytest.approx(105.8411)
        assert req["zipcode"] is None  # null: an empty element
        assert req == {k: (None if v is None else str(v)) for k, v in
                       (await asyncio.to_thread(js.get_service_request, rid)).items()}
        listed = _one_or_many(await asyncio.to_thread(xml.get_service_requests, status="open",
                                                      service_code="water_leak"))
        assert rid in {r["service_request_id"] for r in listed}
        everything = await (await client.get("/open311/v2/requests.xml")).text()
        for text in (str(req), str(listed), everything):
            assert "an@example.vn" not in text and code not in text

        one = await (await client.get(f"/open311/v2/requests.json?service_request_id={rid}")).json()
        assert [r["service_request_id"] for r in one] == [rid]
        assert (await client.get("/open311/v2/requests.json?service_request_id=a,b")).status == 400
        # errors in the spec's shape, in XML too
        resp = await client.get("/open311/v2/requests/nope.xml")
        assert resp.status == 404
        err = xmltodict.parse(await resp.read())["errors"]["error"]
        assert err["code"] == "404" and err["description"]
        resp = await client.post("/open311/v2/requests.xml", data={"service_code": "water_leak", "lat": "95",
                                                                   "long": "105", "description": "x"})
        err = xmltodict.parse(await resp.read())["errors"]["error"]
        assert resp.status == 400 and err["code"] == "400" and "lat" in err["description"]
        with pytest.raises(Exception, match="404"):
            await asyncio.to_thread(xml.get_service_definition, "ufo")


async def test_open311_xml_escapes_what_it_carries(settings):
    async with running(settings) as client:
        resp = await client.post("/open311/v2/requests.json", json={
            "service_code": "other", "lat": "21.6", "long": "105.8", "description": "A & B > C \"quoted\""})
        rid = (await resp.json())[0]["service_request_id"]
        raw = await (await client.get(f"/open311/v2/requests/{rid}.xml")).read()
        assert b"A &amp; B &gt; C" in raw
        assert xmltodict.parse(raw)["service_requests"]["request"]["description"] == 'A & B > C "quoted"'
