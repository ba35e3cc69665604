"""The SensorThings data model over our tables: each entity set is a SQL source, the
properties a filter may name, its navigation to other sets, and how a row becomes an entity.

    Things               devices; ``@iot.id`` and ``name`` are the device id
    Locations            a device's geometry (one per device, the same id)
    HistoricalLocations  one per device: where it was registered, when (minimal)
    FeaturesOfInterest   a device's geometry again, what its observations are about
    Sensors              device kinds (``streetlight``, …)
    ObservedProperties   metrics of the catalogue (server/store/catalog.py), by name
    Datastreams          device × metric: the kind's catalogue metrics and any other the device
                         has reported; ``@iot.id`` is ``<device>~<metric>``
    Observations         readings (server/api/sta/observations.py reads them, raw and
                         compressed alike); ``@iot.id`` is ``<device>~<metric>~<µs since 1970>``

Ids are strings (frost-sta-client quotes them: ``Things('SL-0001')``) and stable: they come
from names, never from database keys. ``~`` appears in no device id or metric name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.sdk import Quality
from server.api.sta.sql import Prop

SEP = "~"
UNIX_US = 946_684_800_000_000  # PostgreSQL's epoch (2000-01-01) in µs since 1970
OM = "http://www.opengis.net/def/observationType/OGC-OM/2.0/"
MEASUREMENT, TRUTH = OM + "OM_Measurement", OM + "OM_TruthObservation"
GEOJSON = "application/geo+json"
QUALITY = {q.value: q.name.lower() for q in Quality}

# Unit symbols of the catalogue with their names and UCUM codes (unitOfMeasurement.definition).
UNITS: dict[str, tuple[str, str]] = {
    "%": ("percent", "%"), "W": ("watt", "W"), "kWh": ("kilowatt hour", "kW.h"), "h": ("hour", "h"),
    "V": ("volt", "V"), "A": ("ampere", "A"), "Hz": ("hertz", "Hz"), "m³": ("cubic metre", "m3"),
    "m³/h": ("cubic metre per hour", "m3/h"), "bar": ("bar", "bar"), "°C": ("degree Celsius", "Cel"),
    "veh/h": ("vehicles per hour", "{vehicle}/h"), "km/h": ("kilometre per hour", "km/h"),
    "µg/m³": ("microgram per cubic metre", "ug/m3"), "ppb": ("parts per billion", "[ppb]"),
    "dB(A)": ("A-weighted decibel", "dB"),
}
UCUM = "http://unitsofmeasure.org/ucum.html#"


def unit_of_measurement(symbol: str | None, value_type: str) -> dict[str, Any]:
    if value_type == "bool" or not symbol:
        return {"name": None, "symbol": None, "definition": None}
    name, code = UNITS.get(symbol, (symbol, None))
    return {"name": name, "symbol": symbol, "definition": UCUM + code if code else None}


def iso(at: datetime) -> str:
    at = at.astimezone(UTC)
    spec = "milliseconds" if at.microsecond % 1000 == 0 else "microseconds"
    return at.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def from_unix_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class Nav:
    """A navigation property: the ``target`` set's rows whose ``link`` (SQL over the target)
    equals ``value(parent row)``."""

    name: str
    target: str
    many: bool
    link: str
    value: Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class EntitySet:
    name: str
    source: str  # FROM …
    columns: str  # SELECT …
    id_sql: str
    order: tuple[str, ...]  # the default (and tie-breaking) order: unique
    props: dict[str, Prop]
    navs: dict[str, Nav]
    fields: tuple[str, ...]  # the entity's own properties, as rendered
    render: Callable[[Mapping[str, Any], str], dict[str, Any]]  # (row, service root) -> fields
    id_of: Callable[[Mapping[str, Any]], str]
    telemetry: bool = False  # Observations: the source reads bound arrays of points
    extra: dict[str, Any] = field(default_factory=dict)


DEVICES = "devices d join kinds k on k.kind = d.kind"
DESCRIPTION = "coalesce(nullif(d.name, ''), k.label_en || ' ' || d.id)"
THING_PROPERTIES = (
    "(d.properties || jsonb_build_object('kind', d.kind, 'ward', d.ward, 'external_id', "
    "d.external_id, 'parent', d.parent, 'status', coalesce(s.status, 'unknown'), "
    "'last_seen', s.last_seen))")
DS_ID = f"(d.id || '{SEP}' || m.name)"
DS_NAME = "(d.id || ' ' || m.name)"
OBS_TIME = "(timestamptz '2000-01-01 00:00:00+00' + o.us * interval '1 microsecond')"
OBS_ID = f"(d.id || '{SEP}' || m.name || '{SEP}' || (o.us + {UNIX_US})::text)"
QUALITY_SQL = "(case o.quality " + " ".join(f"when {k} then '{v}'" for k, v in QUALITY.items()) + " end)"
OBSERVATION_TYPE = f"(case m.value_type when 'bool' then '{TRUTH}' else '{MEASUREMENT}' end)"


def _p(sql: str, typ: str = "text") -> Prop:
    return Prop(sql, typ)


def _id(row) -> str:
    return row["id"]


# ---------------------------------------------------------------- Things and their places
def _thing(row, root: str) -> dict[str, Any]:
    return {"name": row["id"], "description": row["description"], "properties": row["properties"]}


THINGS = EntitySet(
    name="Things",
    source=DEVICES + " left join device_state s on s.device_key = d.key",
    columns=f"d.id, {DESCRIPTION} as description, {THING_PROPERTIES} as properties",
    id_sql="d.id",
    order=("d.id",),
    props={"@iot.id": _p("d.id"), "name": _p("d.id"), "description": _p(DESCRIPTION),
           "properties": _p(THING_PROPERTIES, "json"), "Locations/location": _p("d.geom", "geom"),
           "location": _p("d.geom", "geom"), "Locations/@iot.id": _p("d.id"),
           "HistoricalLocations/time": _p("d.created_at", "time")},
    navs={"Locations": Nav("Locations", "Locations", True, "d.id", _id),
          "HistoricalLocations": Nav("HistoricalLocations", "HistoricalLocations", True, "d.id", _id),
          "Datastreams": Nav("Datastreams", "Datastreams", True, "d.id", _id)},
    fields=("name", "description", "properties"),
    render=_thing,
    id_of=_id,
)


def _location(row, root: str) -> dict[str, Any]:
    return {"name": row["id"], "description": row["description"], "encodingType": GEOJSON,
            "location": row["geometry"]}


LOCATIONS = EntitySet(
    name="Locations",
    source=DEVICES,
    columns=f"d.id, {DESCRIPTION} as description, ST_AsGeoJSON(d.geom, 7)::jsonb as geometry",
    id_sql="d.id",
    order=("d.id",),
    props={"@iot.id": _p("d.id"), "name": _p("d.id"), "description": _p(DESCRIPTION),
           "encodingType": _p(f"'{GEOJSON}'::text"), "location": _p("d.geom", "geom"),
           "Things/@iot.id": _p("d.id"), "Things/name": _p("d.id")},
    navs={"Things": Nav("Things", "Things", True, "d.id", _id),
          "HistoricalLocations": Nav("HistoricalLocations", "HistoricalLocations", True, "d.id", _id)},
    fields=("name", "description", "encodingType", "location"),
    render=_location,
    id_of=_id,
)

HISTORICAL_LOCATIONS = EntitySet(
    name="HistoricalLocations",
    source="devices d",
    columns="d.id, d.created_at as time",
    id_sql="d.id",
    order=("d.id",),
    props={"@iot.id": _p("d.id"), "time": _p("d.created_at", "time"), "Thing/@iot.id": _p("d.id"),
           "Thing/name": _p("d.id")},
    navs={"Thing": Nav("Thing", "Things", False, "d.id", _id),
          "Locations": Nav("Locations", "Locations", True, "d.id", _id)},
    fields=("time",),
    render=lambda row, root: {"time": iso(row["time"])},
    id_of=_id,
)


def _feature(row, root: str) -> dict[str, Any]:
    return {"name": row["id"], "description": row["description"], "encodingType": GEOJSON,
            "feature": row["geometry"]}


FEATURES = EntitySet(
    name="FeaturesOfInterest",
    source=DEVICES,
    columns=f"d.id, {DESCRIPTION} as description, ST_AsGeoJSON(d.geom, 7)::jsonb as geometry",
    id_sql="d.id",
    order=("d.id",),
    props={"@iot.id": _p("d.id"), "name": _p("d.id"), "description": _p(DESCRIPTION),
           "encodingType": _p(f"'{GEOJSON}'::text"), "feature": _p("d.geom", "geom")},
    navs={"Observations": Nav("Observations", "Observations", True, "d.id", _id)},
    fields=("name", "description", "encodingType", "feature"),
    render=_feature,
    id_of=_id,
)


# ---------------------------------------------------------------- what is measured, by what
SENSOR_DESCRIPTION = "(k.label_en || ' (' || k.label_vi || ')')"


def _sensor(row, root: str) -> dict[str, Any]:
    kind = row["kind"]
    return {"name": row["label_en"], "description": row["description"],
            "encodingType": "text/html",
            # the kind's OGC API collection describes it (and lists its devices)
            "metadata": f"{root.rsplit('/sta/', 1)[0]}/ogc/collections/{kind}?f=html",
            "properties": {"kind": kind, "label_vi": row["label_vi"], "metrics": row["metrics"],
                           "expected_interval_s": row["expected_interval_s"]}}


SENSORS = EntitySet(
    name="Sensors",
    source="kinds k",
    columns=(f"k.kind as id, k.kind, k.label_en, k.label_vi, {SENSOR_DESCRIPTION} as description, "
             "k.metrics, k.expected_interval_s"),
    id_sql="k.kind",
    order=("k.kind",),
    props={"@iot.id": _p("k.kind"), "name": _p("k.label_en"), "description": _p(SENSOR_DESCRIPTION),
           "encodingType": _p("'text/html'::text"),
           "properties": _p("jsonb_build_object('kind', k.kind, 'label_vi', k.label_vi, 'metrics', "
                            "k.metrics, 'expected_interval_s', k.expected_interval_s)", "json")},
    navs={"Datastreams": Nav("Datastreams", "Datastreams", True, "d.kind", _id)},
    fields=("name", "description", "encodingType", "metadata", "properties"),
    render=_sensor,
    id_of=_id,
)

_OP_DESCRIPTION = "coalesce(nullif(m.description, ''), m.name)"


def _observed_property(row, root: str) -> dict[str, Any]:
    return {"name": row["id"], "definition": f"urn:ioc:metric:{row['id']}",
            "description": row["description"],
            "properties": {"unit": row["unit"], "value_type": row["value_type"]}}


OBSERVED_PROPERTIES = EntitySet(
    name="ObservedProperties",
    source="metrics m",
    columns=f"m.name as id, m.unit, m.value_type, {_OP_DESCRIPTION} as description",
    id_sql="m.name",
    order=("m.name",),
    props={"@iot.id": _p("m.name"), "name": _p("m.name"), "description": _p(_OP_DESCRIPTION),
           "definition": _p("('urn:ioc:metric:' || m.name)"),
           "properties": _p("jsonb_build_object('unit', m.unit, 'value_type', m.value_type)", "json")},
    navs={"Datastreams": Nav("Datastreams", "Datastreams", True, "m.name", _id)},
    fields=("name", "definition", "description", "properties"),
    render=_observed_property,
    id_of=_id,
)


# ---------------------------------------------------------------- Datastreams: device x metric
def _datastream(row, root: str) -> dict[str, Any]:
    what = row["metric_description"] or row["metric"]  # as the description property's SQL
    return {"name": f"{row['device']} {row['metric']}",
            "description": f"{what} of {row['device']} ({row['label_en']})",
            "observationType": TRUTH if row["value_type"] == "bool" else MEASUREMENT,
            "unitOfMeasurement": unit_of_measurement(row["unit"], row["value_type"]),
            "observedArea": row["area"],
            "properties": {"device": row["device"], "metric": row["metric"], "kind": row["kind"]}}


def _ds_id(row) -> str:
    return f"{row['device']}{SEP}{row['metric']}"


DATASTREAMS = EntitySet(
    name="Datastreams",
    # The kind's catalogue metrics, and whatever else the device has reported (a water main
    # has no fixed list; an integration may send extra metrics).
    source=(DEVICES + " left join device_state s on s.device_key = d.key "
            "cross join lateral (select distinct n from unnest(coalesce(k.metrics, '{}'::text[]) || "
            "array(select jsonb_object_keys(coalesce(s.values, '{}'::jsonb)))) as n) x "
            "join metrics m on m.name = x.n"),
    columns=("d.id as device, d.kind, k.label_en, m.name as metric, m.unit, m.value_type, "
             "m.description as metric_description, "
             "ST_AsGeoJSON(ST_ConvexHull(d.geom), 7)::jsonb as area"),
    id_sql=DS_ID,
    order=("d.id", "m.name"),
    props={"@iot.id": _p(DS_ID), "name": _p(DS_NAME), "observationType": _p(OBSERVATION_TYPE),
           "description": _p("(coalesce(nullif(m.description, ''), m.name) || ' of ' || d.id || "
                             "' (' || k.label_en || ')')"),
           "unitOfMeasurement/symbol": _p("m.unit"), "observedArea": _p("d.geom", "geom"),
           "properties": _p("jsonb_build_object('device', d.id, 'metric', m.name, 'kind', d.kind)",
                            "json"),
           "Thing/@iot.id": _p("d.id"), "Thing/name": _p("d.id"),
           "Thing/Locations/location": _p("d.geom", "geom"),
           "Sensor/@iot.id": _p("d.kind"), "Sensor/name": _p("k.label_en"),
           "ObservedProperty/@iot.id": _p("m.name"), "ObservedProperty/name": _p("m.name")},
    navs={"Thing": Nav("Thing", "Things", False, "d.id", lambda r: r["device"]),
          "Sensor": Nav("Sensor", "Sensors", False, "k.kind", lambda r: r["kind"]),
          "ObservedProperty": Nav("ObservedProperty", "ObservedProperties", False, "m.name",
                                  lambda r: r["metric"]),
          "Observations": Nav("Observations", "Observations", True, DS_ID, _ds_id)},
    fields=("name", "description", "observationType", "unitOfMeasurement", "observedArea",
            "properties"),
    render=_datastream,
    id_of=_ds_id,
)


# ---------------------------------------------------------------- Observations
def _result(row) -> Any:
    value = row["value"]
    if value != value or value in (float("inf"), float("-inf")):  # NaN, ±inf: not JSON
        return None
    return bool(value) if row["value_type"] == "bool" else value


def _observation(row, root: str) -> dict[str, Any]:
    at = iso(from_unix_us(row["us"] + UNIX_US))
    return {"phenomenonTime": at, "resultTime": at, "result": _result(row),
            "resultQuality": QUALITY.get(row["quality"], str(row["quality"]))}


def _obs_id(row) -> str:
    return f"{row['device']}{SEP}{row['metric']}{SEP}{row['us'] + UNIX_US}"


OBSERVATIONS = EntitySet(
    name="Observations",
    # $1…$5 are the points read through the history (observations.py): device keys, metric
    # ids, µs since 2000, values and qualities.
    source=("unnest($1::int[], $2::smallint[], $3::int8[], $4::float8[], $5::smallint[]) "
            "as o(device_key, metric_id, us, value, quality) "
            "join devices d on d.key = o.device_key join metrics m on m.id = o.metric_id"),
    columns="d.id as device, m.name as metric, m.value_type, o.us, o.value, o.quality",
    id_sql=OBS_ID,
    order=("o.us", "d.id", "m.name"),
    props={"@iot.id": _p(OBS_ID), "phenomenonTime": _p(OBS_TIME, "time"),
           "resultTime": _p(OBS_TIME, "time"), "result": _p("o.value", "number"),
           "resultQuality": _p(QUALITY_SQL),
           "Datastream/@iot.id": _p(DS_ID), "Datastream/name": _p(DS_NAME),
           "Datastream/Thing/@iot.id": _p("d.id"), "Datastream/Thing/name": _p("d.id"),
           "Datastream/ObservedProperty/@iot.id": _p("m.name"),
           "Datastream/ObservedProperty/name": _p("m.name"),
           "FeatureOfInterest/@iot.id": _p("d.id"), "FeatureOfInterest/name": _p("d.id"),
           "FeatureOfInterest/feature": _p("d.geom", "geom")},
    navs={"Datastream": Nav("Datastream", "Datastreams", False, DS_ID, _ds_id),
          "FeatureOfInterest": Nav("FeatureOfInterest", "FeaturesOfInterest", False, "d.id",
                                   lambda r: r["device"])},
    fields=("phenomenonTime", "resultTime", "result", "resultQuality"),
    render=_observation,
    id_of=_obs_id,
    telemetry=True,
)

SETS: dict[str, EntitySet] = {s.name: s for s in (
    THINGS, LOCATIONS, HISTORICAL_LOCATIONS, DATASTREAMS, SENSORS, OBSERVED_PROPERTIES,
    OBSERVATIONS, FEATURES)}
