"""Rule documents: the YAML files' and the API's shape, validated with pydantic.

One model per rule kind, in a union discriminated on ``kind``, so an error names the
field of the kind that was meant (``threshold.below``) rather than every kind's. Durations
are ``30s``, ``5m``, ``2h``, ``1d`` or a number of seconds. Unknown fields are errors: a
typo like ``bellow`` must not silently leave a rule without its limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from rules.vocab import Severity

# Priority 1 is the most urgent (ISA-18.2's "high"); stored as alarms.priority.
PRIORITY_NAMES = {"high": 1, "medium": 2, "low": 3}
PRIORITY_OF_SEVERITY = {Severity.CRITICAL: 1, Severity.MAJOR: 2, Severity.MINOR: 3,
                        Severity.WARNING: 3}
RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)?\s*$")


def parse_duration(v: Any) -> float:
    """``30s``, ``5m``, ``2h``, ``1d``, ``500ms`` or a number of seconds → seconds."""
    if isinstance(v, bool):
        raise ValueError("a duration is a number of seconds or text like 30s, 5m, 2h")
    if isinstance(v, int | float):
        if v < 0:
            raise ValueError("a duration cannot be negative")
        return float(v)
    if isinstance(v, str):
        m = _DURATION.match(v)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"{v!r} is not a duration; write it like 30s, 5m, 2h or 1d")


def _number(v: Any) -> Any:
    if isinstance(v, bool):  # JSON's true is not 1: the document says number
        raise ValueError("must be a number, not true or false")
    return v


# A number; true and false are refused (pydantic's lax float would take them as 1 and 0).
Real = Annotated[float, BeforeValidator(_number)]

MAX_DURATION_S = 366 * 86400.0  # a year: longer delays and windows are mistakes
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=MAX_DURATION_S)]


def _one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


# One value or a list of them; the published schema says so, so clients (and schemathesis)
# are not told a lone string is wrong when the server takes it.
StrList = Annotated[list[str], BeforeValidator(_one_or_many), WithJsonSchema({
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    "description": "one value or a list of them"})]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Select(_Model):
    """Which devices a rule watches; every given condition must hold (empty: all devices)."""

    kind: StrList | None = None
    devices: StrList | None = None
    ward: StrList | None = None
    parent: StrList | None = None
    bbox: tuple[Real, Real, Real, Real] | None = Field(
        default=None, description="minLon, minLat, maxLon, maxLat")

    @model_validator(mode="after")
    def _bbox_order(self) -> Select:
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
                raise ValueError("bbox must be [minLon, minLat, maxLon, maxLat] in WGS 84 with "
                                 "min < max")
        return self


class _Rule(_Model):
    id: str = Field(pattern=RULE_ID)
    description: str = ""
    select: Select = Select()
    severity: Severity
    priority: Literal["high", "medium", "low"] | None = Field(
        default=None, description="default: high for critical, medium for major, else low")
    # Strict: the document says boolean, so 0, 1 or "no" in a JSON body is refused, not
    # guessed (YAML's yes/no arrive as booleans already).
    enabled: StrictBool = True
    message: str | None = Field(
        default=None,
        description="text shown with the alarm; {device}, {value}, {rule}, {text} are filled in")

    @property
    def priority_level(self) -> int:
        if self.priority is not None:
            return PRIORITY_NAMES[self.priority]
        return PRIORITY_OF_SEVERITY[self.severity]

    @property
    def members(self) -> tuple[str, ...]:
        """The rules whose alarms this one correlates (topology, neighbourhood)."""
        return ()


class _Delays(_Model):
    on_delay: Duration = 0.0
    off_delay: Duration = 0.0


class ThresholdRule(_Rule, _Delays):
    """High/low limits (and high-high/low-low) with a deadband and on/off delays."""

    kind: Literal["threshold"]
    metric: str
    above: Real | None = None
    below: Real | None = None
    high_high: Real | None = None
    low_low: Real | None = None
    high_high_severity: Severity = Severity.CRITICAL
    deadband: Real = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _limits(self) -> ThresholdRule:
        if self.above is None and self.below is None:
            raise ValueError("give a limit: above, below, or both for a band")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError(f"below ({self.below}) must be less than above ({self.above})")
        if self.high_high is not None and (self.above is None or self.high_high <= self.above):
            raise ValueError("high_high needs an above limit lower than it")
        if self.low_low is not None and (self.below is None or self.low_low >= self.below):
            raise ValueError("low_low needs a below limit higher than it")
        return self


class RateOfChangeRule(_Rule, _Delays):
    """Change per minute over a window: ``below: -0.5`` is a drop faster than 0.5/min."""

    kind: Literal["rate_of_change"]
    metric: str
    window: Duration
    above: Real | None = None
    below: Real | None = None
    deadband: Real = Field(default=0.0, ge=0)
    min_span: Real = Field(default=0.5, gt=0, le=1,
                            description="fraction of the window the samples must cover")

    @model_validator(mode="after")
    def _limits(self) -> RateOfChangeRule:
        if self.above is None and self.below is None:
            raise ValueError("give a rate: above (rise per minute), below (change per minute, "
                             "negative for a drop), or both")
        if self.window <= 0:
            raise ValueError("window must be longer than 0 s")
        return self


class StaleRule(_Rule):
    """No data for ``missed_intervals`` of the device's expected reporting interval."""

    kind: Literal["stale"]
    missed_intervals: Real = Field(default=3.0, gt=0)
    interval: Duration | None = Field(
        default=None, description="overrides the device's (or its kind's) expected interval")


class FaultRule(_Rule, _Delays):
    """A device-reported fault: a boolean metric true, a reading of bad quality (NaN, out of
    range, Modbus exception), or (``offline: true``) the device's link reporting it offline."""

    kind: Literal["fault"]
    metric: str | None = Field(default=None, description="none: a bad reading of any metric")
    bad_quality: StrictBool = True
    offline: StrictBool = False


class StateRule(_Rule, _Delays):
    kind: Literal["state"]
    metric: str
    in_: list[Real] = Field(alias="in", min_length=1)


class LightingScheduleRule(_Rule, _Delays):
    """A lamp on in daylight (day-burner) or off at night (outage), from the sun at the lamp;
    a lamp with a lighting schedule (rules/schedules.py) is checked against its schedule
    instead: on while the schedule has it off, or off while it has it on.

    ``margin`` is kept clear of sunrise and sunset (or the schedule's switching times) on
    both sides, for photocells' spread and commands on their way.
    """

    kind: Literal["lighting_schedule"]
    metric: str = "lamp_on"
    check: Literal["both", "day_burner", "night_outage"] = "both"
    margin: Duration = 1200.0
    schedules: StrictBool = Field(default=True, description=(
        "check lamps that follow a lighting schedule against it (false: the sun only)"))


class TopologyRule(_Rule):
    """At least ``min_count`` children of one parent in ``member`` alarm within ``within``:
    one incident on the parent, the children's alarms suppressed by design."""

    kind: Literal["topology"]
    member: str = Field(pattern=RULE_ID)
    min_count: int = Field(default=3, ge=2)
    within: Duration = 300.0
    clear_below: int = Field(default=1, ge=1,
                             description="the incident clears when fewer children are in alarm")
    suppress_children: StrictBool = True

    @property
    def members(self) -> tuple[str, ...]:
        return (self.member,)


class NeighbourhoodRule(_Rule):
    """At least ``min_count`` ``member`` alarms within ``radius_m`` of each other, raised
    within ``within``: one incident at the estimated location (a weighted centroid)."""

    kind: Literal["neighbourhood"]
    member: str = Field(pattern=RULE_ID)
    min_count: int = Field(default=2, ge=2)
    radius_m: Real = Field(gt=0, le=50_000)
    within: Duration = 180.0
    clear_below: int = Field(default=1, ge=1)
    suppress_children: StrictBool = True

    @property
    def members(self) -> tuple[str, ...]:
        return (self.member,)


Rule = Annotated[
    ThresholdRule | RateOfChangeRule | StaleRule | FaultRule | StateRule | LightingScheduleRule
    | TopologyRule | NeighbourhoodRule,
    Field(discriminator="kind"),
]
RULE_KINDS = ("threshold", "rate_of_change", "stale", "fault", "state", "lighting_schedule",
              "topology", "neighbourhood")
CORRELATING_KINDS = ("topology", "neighbourhood")
_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)


class RuleError(ValueError):
    """Invalid rule documents; ``errors`` are lines naming the source, the rule and the field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _field_path(loc: tuple, kind: Any) -> str:
    # The discriminated union puts the kind's tag first in loc: drop it, it is not a field.
    parts = [str(p) for p in loc]
    if parts and parts[0] == kind:
        parts = parts[1:]
    return ".".join(parts) or "(rule)"


def parse_rule(doc: Any, *, source: str = "request", index: int | None = None) -> Rule:
    """One rule document → a rule, or RuleError whose lines say where and what is wrong."""
    where = f"{source}: " if source else ""
    if not isinstance(doc, Mapping):
        pos = f"rule #{index + 1}" if index is not None else "the rule"
        raise RuleError([f"{where}{pos}: must be a mapping with id, kind, severity, ..."])
    rid = doc.get("id")
    name = f"rule {rid!r}" if isinstance(rid, str) and rid else (
        f"rule #{index + 1}" if index is not None else "the rule")
    try:
        return _ADAPTER.validate_python(dict(doc))
    except ValidationError as err:
        lines = []
        for e in err.errors(include_url=False):
            msg = e["msg"]
            if e["type"] == "union_tag_invalid":
                msg = f"unknown kind {doc.get('kind')!r}; known kinds: {', '.join(RULE_KINDS)}"
            elif e["type"] == "union_tag_not_found":
                msg = f"missing kind; one of {', '.join(RULE_KINDS)}"
            lines.append(f"{where}{name}: {_field_path(e['loc'], doc.get('kind'))}: {msg}")
        raise RuleError(lines) from None


def parse_rules(docs: Iterable[Any], *, source: str) -> tuple[list[Rule], list[str]]:
    """Every valid rule, and an error line for each invalid one (the rest still load)."""
    rules, errors, seen = [], [], {}
    for i, doc in enumerate(docs):
        try:
            rule = parse_rule(doc, source=source, index=i)
        except RuleError as err:
            errors.extend(err.errors)
            continue
        if rule.id in seen:
            errors.append(f"{source}: rule {rule.id!r}: id: repeated (rules #{seen[rule.id] + 1} "
                          f"and #{i + 1}); ids must be unique")
            continue
        seen[rule.id] = i
        rules.append(rule)
    return rules, errors


def check_references(rules: Iterable[Rule]) -> list[str]:
    """Correlating rules must name member rules that exist and are not correlating."""
    by_id = {r.id: r for r in rules}
    errors = []
    for r in by_id.values():
        for m in r.members:
            target = by_id.get(m)
            if target is None:
                errors.append(f"rule {r.id!r}: member: no rule {m!r}")
            elif target.kind in CORRELATING_KINDS:
                errors.append(f"rule {r.id!r}: member: {m!r} is itself a {target.kind} rule; "
                              "name a rule that watches devices")
    return errors


def rule_document(rule: Rule) -> dict[str, Any]:
    """The rule as a JSON document (aliases, defaults included), as the API shows it."""
    return rule.model_dump(mode="json", by_alias=True)
