"""The map's first view asks for each tile once: one composite tile holds every visible layer."""

from __future__ import annotations

import re
from collections import Counter

from tests.helpers import running
from tests.web.helpers import artifact, base_url, map_ready, new_page

TILE = re.compile(r"/tiles/([^/]+)/(\d+)/(\d+)/(\d+)\.mvt")


async def test_first_view_requests_each_tile_once(browser, city_db_url, make_settings, token_for):
    token = await token_for(city_db_url, "viewer")
    async with running(make_settings(city_db_url)) as client:
        page = await new_page(browser)
        requests: list[tuple[str, str]] = []  # (layers, z/x/y)

        def seen(request):
            m = TILE.search(request.url)
            if m:
                requests.append((m.group(1), "/".join(m.group(2, 3, 4))))

        page.on("request", seen)
        await page.goto(f"{base_url(client)}/?token={token}")
        await map_ready(page)
        first_view = list(requests)
        await page.screenshot(path=artifact("map-composite-tiles.png"))

        assert first_view, "the map asked for no tiles"
        per_tile = Counter(zxy for _, zxy in first_view)
        assert max(per_tile.values()) == 1, per_tile.most_common(5)
        layers = {spec for spec, _ in first_view}
        assert len(layers) == 1, layers
        names = set(next(iter(layers)).split(","))
        # every visible layer is in the one URL: the wards, roads and device kinds at least
        assert {"wards", "roads", "streetlight"} <= names, names
        # hidden by default: not fetched at all
        assert "alarms" not in names and "ward_stats" not in names, names
        drawn = await page.evaluate(
            "() => new Set(window.ioc.map.queryRenderedFeatures().map(f => f.sourceLayer)).size")
        assert drawn >= 3
