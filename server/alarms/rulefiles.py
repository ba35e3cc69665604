"""Rule files: the ``[rules] paths`` globs, loaded from YAML and re-read when they change.

A file is re-read when its modification time or size changes (polled: no inotify needed,
and it works on network mounts). Mistakes never silently remove an alarm: a file that is
not valid YAML keeps its previous rules, and a rule that no longer validates keeps its
previous version, while the error (file, rule, field) is logged and shown by the API
until the file is fixed.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rules.models import Rule, parse_rules

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RuleFile:
    path: Path
    signature: tuple[int, int]
    rules: list[Rule] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_rule_file(path: Path) -> tuple[list[Rule] | None, list[str]]:
    """The rules of one file and its errors; None when the file as a whole is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return None, [f"{path}: cannot read: {err}"]
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        return None, [f"{path}{where}: not valid YAML: {problem}"]
    if doc is None:
        return [], []
    docs: Any = doc.get("rules") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and set(doc) - {"rules"}:
        return None, [f"{path}: unexpected top-level key(s) {sorted(set(doc) - {'rules'})}; "
                      "a rule file holds `rules: [...]`"]
    if not isinstance(docs, list):
        return None, [f"{path}: expected `rules:` followed by a list of rules"]
    return parse_rules(docs, source=str(path))


class RuleFiles:
    """The rule files matching some globs, re-read on change."""

    def __init__(self, patterns: Iterable[str], base: Path | None = None) -> None:
        self.patterns = list(patterns)
        self.base = base or Path.cwd()
        self.files: dict[Path, RuleFile] = {}

    def _paths(self) -> list[Path]:
        found: set[Path] = set()
        for pattern in self.patterns:
            full = pattern if os.path.isabs(pattern) else str(self.base / pattern)
            found.update(Path(p).resolve() for p in glob.glob(full, recursive=True)
                         if os.path.isfile(p))
        return sorted(found)

    def scan(self) -> bool:
        """Re-read what changed; True when any file was added, changed or removed."""
        changed = False
        paths = self._paths()
        for gone in set(self.files) - set(paths):
            logger.info("rule file %s removed: its rules are gone", gone)
            del self.files[gone]
            changed = True
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            sig = (st.st_mtime_ns, st.st_size)
            old = self.files.get(path)
            if old is not None and old.signature == sig:
                continue
            changed = True
            rules, errors = read_rule_file(path)
            if rules is None:
                kept = old.rules if old is not None else []
                if old is not None:
                    errors = [*errors, f"{path}: keeping the {len(kept)} rule(s) it had before"]
                self.files[path] = RuleFile(path, sig, kept, errors)
            else:
                if old is not None:
                    # A rule that no longer validates keeps its previous version.
                    ids = {r.id for r in rules}
                    broken = [r for r in old.rules if r.id not in ids and
                              any(f"rule {r.id!r}" in e for e in errors)]
                    rules = rules + broken
                    errors += [f"{path}: rule {r.id!r}: keeping its previous version" for r in broken]
                self.files[path] = RuleFile(path, sig, rules, errors)
            for e in errors:
                logger.error("rule file: %s", e)
            if not errors:
                logger.info("rule file %s: %d rule(s) loaded", path, len(self.files[path].rules))
        return changed

    def rules(self) -> tuple[list[tuple[Rule, str]], list[str]]:
        """Every file rule with its source (``file:<path>``), and all errors; an id defined
        in two files is kept from the first (in path order) and the second is an error."""
        out: list[tuple[Rule, str]] = []
        errors: list[str] = []
        seen: dict[str, Path] = {}
        for path in sorted(self.files):
            f = self.files[path]
            errors += f.errors
            for r in f.rules:
                if r.id in seen:
                    errors.append(f"{path}: rule {r.id!r}: id: already defined in {seen[r.id]}")
                    continue
                seen[r.id] = path
                out.append((r, f"file:{path}"))
        return out, errors
