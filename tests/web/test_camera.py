"""Issue 18, cameras, in a real browser in English and Vietnamese: a camera on 127.0.0.1
(allow-listed) plays its HLS stream, made by ffmpeg, through the server's media proxy; the
Wards tab counts cameras per ward."""

from __future__ import annotations

import psycopg
import pytest
from aiohttp.test_utils import TestServer

from server.settings import SecuritySettings
from tests.helpers import running
from tests.media import camera_app, make_media
from tests.web.helpers import artifact, base_url, map_ready, new_page


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("cam"))


@pytest.mark.parametrize(("lang", "locale", "video_name", "cameras"),
                         [("en", "en-GB", "Live video of", "Cameras"),
                          ("vi", "vi-VN", "Video trực tiếp của", "Camera")])
async def test_a_camera_plays_through_the_proxy(browser, city_db_url, make_settings, token_for,
                                                media_dir, lang, locale, video_name, cameras):
    cam = TestServer(camera_app(media_dir), host="127.0.0.1")
    await cam.start_server()
    try:
        with psycopg.connect(city_db_url) as conn:
            conn.execute("update devices set properties = properties || jsonb_build_object("
                         "'stream_url', %s::text) where id = 'CAM-0001'",
                         (f"http://127.0.0.1:{cam.port}/cam/index.m3u8",))
            lon, lat = conn.execute("select ST_X(geom), ST_Y(geom) from devices "
                                    "where id = 'CAM-0001'").fetchone()
        settings = make_settings(city_db_url, security=SecuritySettings(allow_outbound=["127.0.0.0/8"]))
        token = await token_for(city_db_url, "operator")
        async with running(settings) as client:
            page = await new_page(browser, locale=locale)
            await page.goto(f"{base_url(client)}/?token={token}#map=17/{lat}/{lon}")
            await map_ready(page)
            await page.evaluate("() => window.ioc.devicePanel.open('CAM-0001')")
            video = page.get_by_label(video_name)
            await video.wait_for()
            # frames decoded and time running: the stream plays
            await page.wait_for_function(
                "() => { const v = document.querySelector('video.camera-video'); "
                "return v && v.readyState >= 2 && v.currentTime > 0.3 && v.videoWidth === 320; }",
                timeout=30_000)
            await page.screenshot(path=artifact(f"camera-{lang}.png"))

            # the Wards tab: a cameras column
            await page.locator("label[for=tab-wards]").click()
            await page.get_by_role("columnheader", name=cameras, exact=True).wait_for()
            await page.screenshot(path=artifact(f"camera-wards-{lang}.png"))
            assert page.errors == []
    finally:
        await cam.close()
