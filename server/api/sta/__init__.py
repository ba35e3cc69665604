"""``/sta/v1.1``: OGC SensorThings API 1.1, read side, over the devices and their telemetry.

    filter        the ``$filter``/``$orderby`` language: tokenizer and parser into a tree
    sql           the tree compiled to parameterized SQL over an entity set's properties
    model         the entity sets over our tables (Things = devices, Datastreams = device x
                  metric, Observations = readings, ...), ids and how rows render
    query         the query options and the resource path, read (400s naming the option)
    observations  readings through the history's one read path (raw and compressed alike)
    resources     rows of a set, of an entity, of a navigation for many parents ($expand)
    views         the routes and the SensorThings JSON

Ids are strings: a Thing's is the device id (its ``name`` too), a Datastream's
``<device>~<metric>``, an Observation's ``<device>~<metric>~<µs since 1970>``. Same tokens
and roles as the rest of the HTTP API.
"""

from __future__ import annotations

from server.api.sta.views import routes

__all__ = ["routes"]
