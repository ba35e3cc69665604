"""The map's palette stays legible for colour-blind readers (issue 18, legibility).

Reads the colours from server/static/js/palette.js, simulates deuteranopia, protanopia and
tritanopia (Machado, Oliveira & Fernandes 2009, full severity, as colorspacious implements
it) and measures distances in CAM02-UCS (ΔE', about 1 = a just-noticeable difference).

Thresholds, and why:
- severities among themselves: ΔE' >= 15 in every vision. A ring's colour is how an operator
  tells critical from major at a glance; ~15 is the spacing of the categorical palettes made
  for CVD (Okabe-Ito's closest pair under deuteranopia is about 11), so a bit above it.
- severity vs any kind or status colour: ΔE' >= 15 for normal vision and >= 8 under each CVD
  simulation. The alarm is carried by the ring's shape and thickness first; its colour only
  has to stand apart from the fill it surrounds, and 8 is still several JNDs for a 2-4 px ring.
- every colour vs the map's background: ΔE' >= 30, so no mark sinks into the dark map.
"""

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

colorspacious = pytest.importorskip("colorspacious")  # dev extra; absent only outside `pip install .[dev]`

PALETTE = Path(__file__).resolve().parents[2] / "server" / "static" / "js" / "palette.js"
BACKGROUND = "#070c16"  # livemap.js BG
SIMS = {"normal": None, "deuteranopia": "deuteranomaly", "protanopia": "protanomaly",
        "tritanopia": "tritanomaly"}


def read_palette():
    text = PALETTE.read_text()
    out = {}
    for name, body in re.findall(r"export const (\w+) = (\{.*?\});", text, re.S):
        out[name] = json.loads(re.sub(r"(\w+):", r'"\1":', body).replace(",\n}", "\n}"))
    return out


def ucs(hexcolour, vision):
    rgb = np.array([int(hexcolour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
    if SIMS[vision]:
        rgb = np.clip(colorspacious.cspace_convert(
            rgb, {"name": "sRGB1+CVD", "cvd_type": SIMS[vision], "severity": 100}, "sRGB1"), 0, 1)
    return colorspacious.cspace_convert(rgb, "sRGB1", "CAM02-UCS")


def distance(a, b, vision):
    return float(np.linalg.norm(ucs(a, vision) - ucs(b, vision)))


def closest(pairs, vision):
    return min((distance(a, b, vision), x, y) for (x, a), (y, b) in pairs)


def test_palette_is_read_whole():
    p = read_palette()
    assert {"KIND_COLOURS", "STATUS_COLOURS", "SEVERITY_COLOURS", "SEVERITY_RING"} <= set(p)
    assert set(p["SEVERITY_COLOURS"]) == {"critical", "major", "minor", "warning"}
    assert len(p["KIND_COLOURS"]) >= 12
    # thicker ring for worse severity: the order reads without any colour
    rings = p["SEVERITY_RING"]
    assert rings["critical"] > rings["major"] > rings["minor"] > rings["warning"] > 0


@pytest.mark.parametrize("vision", list(SIMS))
def test_palette_distances_under_colour_blindness(vision):
    p = read_palette()
    sev = p["SEVERITY_COLOURS"]
    fills = {**{f"kind:{k}": v for k, v in p["KIND_COLOURS"].items()},
             **{f"status:{k}": v for k, v in p["STATUS_COLOURS"].items()}}
    sev_sev = closest(itertools.combinations(sev.items(), 2), vision)
    sev_fill = closest(itertools.product(sev.items(), fills.items()), vision)
    on_bg = min((distance(c, BACKGROUND, vision), k) for k, c in {**sev, **p["KIND_COLOURS"]}.items())
    print(f"\n{vision:13s} severity-severity {sev_sev[0]:5.1f} ({sev_sev[1]}/{sev_sev[2]})"
          f"  severity-fill {sev_fill[0]:5.1f} ({sev_fill[1]}/{sev_fill[2]})"
          f"  vs background {on_bg[0]:5.1f} ({on_bg[1]})")
    assert sev_sev[0] >= 15, f"severities {sev_sev[1]} and {sev_sev[2]} too close under {vision}"
    assert sev_fill[0] >= (15 if vision == "normal" else 8), \
        f"severity {sev_fill[1]} too close to {sev_fill[2]} under {vision}"
    assert on_bg[0] >= 30, f"{on_bg[1]} sinks into the background under {vision}"


def test_the_old_palette_fails():
    """The check can fail: the palette of before (lamp #ffd166 vs minor #ffd43b) does."""
    assert distance("#ffd166", "#ffd43b", "normal") < 8
    assert distance("#4cc9f0", "#74c0fc", "tritanopia") < 8
