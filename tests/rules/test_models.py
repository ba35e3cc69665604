"""Rule documents: validation messages that name the source, the rule and the field."""

from __future__ import annotations

import pytest

from rules.devices import DeviceTable
from rules.engine import RuleEngine
from rules.evaluator import MetricInfo
from rules.models import RuleError, parse_duration, parse_rule, parse_rules
from server.alarms.rulefiles import RuleFiles, read_rule_file
from server.cli.demo import DEMO_RULES
from server.store.catalog import METRICS


def test_durations():
    assert parse_duration("30s") == 30 and parse_duration("5m") == 300
    assert parse_duration("2h") == 7200 and parse_duration("1.5d") == 129600
    assert parse_duration(15) == 15 and parse_duration("500ms") == 0.5
    for bad in ("soon", "-5s", -1, True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_errors_name_source_rule_and_field():
    with pytest.raises(RuleError) as err:
        parse_rule({"id": "p", "kind": "threshold", "metric": "pressure_bar", "bellow": 1,
                    "severity": "major"}, source="site.yaml")
    text = "\n".join(err.value.errors)
    assert "site.yaml: rule 'p': bellow: Extra inputs are not permitted" in text
    with pytest.raises(RuleError) as err:
        parse_rule({"id": "p", "kind": "threshold", "metric": "m", "below": 1,
                    "on_delay": "soon", "severity": "huge"}, source="f.yaml")
    fields = [e.split(": ")[2] for e in err.value.errors]
    assert fields == ["on_delay", "severity"]
    with pytest.raises(RuleError) as err:
        parse_rule({"id": "p", "kind": "blinking", "severity": "major"})
    assert "unknown kind 'blinking'; known kinds: threshold" in err.value.errors[0]
    rules, errors = parse_rules([{"id": "a", "kind": "stale", "severity": "minor"},
                                 {"id": "a", "kind": "stale", "severity": "minor"}, "x"],
                                source="g.yaml")
    assert [r.id for r in rules] == ["a"]
    assert errors[0] == ("g.yaml: rule 'a': id: repeated (rules #1 and #2); ids must be unique")
    assert errors[1].startswith("g.yaml: rule #3: must be a mapping")


def test_band_and_levels_are_checked():
    with pytest.raises(RuleError, match=r"below .* must be less than above"):
        parse_rule({"id": "b", "kind": "threshold", "metric": "m", "below": 5, "above": 3,
                    "severity": "minor"})
    with pytest.raises(RuleError, match="high_high needs an above limit"):
        parse_rule({"id": "b", "kind": "threshold", "metric": "m", "below": 5, "high_high": 9,
                    "severity": "minor"})


def test_demo_rules_are_valid_against_the_catalogue():
    rules, errors = read_rule_file(DEMO_RULES)
    assert errors == [] and len(rules) >= 10
    kinds = {r.kind for r in rules}
    assert kinds == {"threshold", "rate_of_change", "stale", "fault", "state", "lighting_schedule",
                     "topology", "neighbourhood"}
    metrics = {m.name: MetricInfo(i + 1, m.value_type == "bool") for i, m in enumerate(METRICS)}
    engine = RuleEngine(DeviceTable.build([]), metrics)
    assert engine.validate(rules) == []


def test_a_broken_file_keeps_its_previous_rules(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("rules:\n  - {id: x, kind: stale, severity: minor}\n")
    files = RuleFiles([str(tmp_path / "*.yaml")])
    assert files.scan()
    assert [r.id for r, _ in files.rules()[0]] == ["x"]
    f.write_text("rules:\n  - {id: x, kind: stale, severity: minor\n")  # unclosed
    assert files.scan()
    rules, errors = files.rules()
    assert [r.id for r, _ in rules] == ["x"]
    assert any("not valid YAML" in e and "line" in e for e in errors)
    g = tmp_path / "b.yaml"
    g.write_text("rules:\n  - {id: x, kind: stale, severity: major}\n")
    assert files.scan()
    rules, errors = files.rules()
    assert any(f"{g}: rule 'x': id: already defined in {f}" in e for e in errors)
    assert not files.scan()  # nothing changed
