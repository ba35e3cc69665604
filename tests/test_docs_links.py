"""The docs a clone carries stay whole: every relative link in README.md and docs/ points at a
file (and heading) of this repository, nothing sends readers outside it (``../shared``), and
the catalogue and configuration tables name everything the code has."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from server.commands.catalog import CATALOGUE
from server.settings import Settings
from server.store.catalog import KINDS, METRICS

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8")))


def test_docs_exist():
    names = {p.name for p in DOCS}
    assert {"architecture.md", "api.md", "adapters.md", "configuration.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_into_the_repository(doc: Path):
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_clone(doc: Path):
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/design" not in text, (
        f"{doc.relative_to(ROOT)} sends readers to ../shared, which a clone does not have")


def test_the_adapter_guide_lists_every_metric_kind_and_command():
    text = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
    rows = {line for line in text.splitlines() if line.startswith("| `")}
    first_cells = {line.split("|")[1].strip().split(" ")[0].strip("`") for line in rows}
    missing = ([m.name for m in METRICS if m.name not in first_cells]
               + [k.kind for k in KINDS if k.kind not in first_cells]
               + [c for c in CATALOGUE if c not in first_cells])
    assert not missing, f"docs/adapters.md lacks rows for {missing}: regenerate its tables"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(f"{prefix}{name}")
        ann = field.annotation
        for arg in (ann, *typing.get_args(ann)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _keys(arg, f"{prefix}{name}.")
    return out


def test_the_configuration_guide_lists_every_key():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [k for k in _keys(Settings) if f"| `{k.rsplit('.', 1)[-1]}` |" not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"
