# Two commands on a fresh Debian/Ubuntu machine:
#   make demo   - the whole system on embedded defaults (prints the map URL and a token)
#   make test   - the whole test suite against real PostgreSQL/PostGIS and mosquitto
# Each does its own set-up and skips what is already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system venv web demo test bench schemathesis lint clean

setup: system venv web

system:
	@bash scripts/setup-system.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# The web pages' browser libraries (the map's MapLibre GL JS and terra-draw, /api/docs's Swagger UI), from npm (package-lock.json pins them); never committed.
WEB_VENDOR := server/static/vendor
WEB_STAMP  := $(WEB_VENDOR)/.installed
MAPLIBRE   := node_modules/maplibre-gl
SWAGGER_UI := node_modules/swagger-ui-dist
UPLOT      := node_modules/uplot
HLSJS      := node_modules/hls.js
TERRADRAW  := node_modules/terra-draw
TDMAPLIBRE := node_modules/terra-draw-maplibre-gl-adapter

web: $(WEB_STAMP) $(WEB_VENDOR)/fonts/DejaVuSans.ttf

$(WEB_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	rm -rf $(WEB_VENDOR)/maplibre-gl
	mkdir -p $(WEB_VENDOR)/maplibre-gl
	cp $(MAPLIBRE)/dist/maplibre-gl.mjs $(MAPLIBRE)/dist/maplibre-gl-worker.mjs \
	   $(MAPLIBRE)/dist/maplibre-gl.css $(MAPLIBRE)/LICENSE.txt $(WEB_VENDOR)/maplibre-gl/
	rm -rf $(WEB_VENDOR)/swagger-ui
	mkdir -p $(WEB_VENDOR)/swagger-ui
	cp $(SWAGGER_UI)/swagger-ui-bundle.js $(SWAGGER_UI)/swagger-ui.css $(SWAGGER_UI)/LICENSE \
	   $(SWAGGER_UI)/NOTICE $(WEB_VENDOR)/swagger-ui/
	rm -rf $(WEB_VENDOR)/uplot $(WEB_VENDOR)/hls.js
	mkdir -p $(WEB_VENDOR)/uplot $(WEB_VENDOR)/hls.js
	cp $(UPLOT)/dist/uPlot.esm.js $(UPLOT)/dist/uPlot.min.css $(UPLOT)/LICENSE $(WEB_VENDOR)/uplot/
	cp $(HLSJS)/dist/hls.mjs $(HLSJS)/LICENSE $(WEB_VENDOR)/hls.js/
	rm -rf $(WEB_VENDOR)/terra-draw
	mkdir -p $(WEB_VENDOR)/terra-draw
	cp $(TERRADRAW)/dist/terra-draw.module.js $(TERRADRAW)/package.json $(WEB_VENDOR)/terra-draw/
	cp $(TDMAPLIBRE)/dist/terra-draw-maplibre-gl-adapter.module.js $(WEB_VENDOR)/terra-draw/
	@touch $@

# The map's street names: MapLibre draws the glyphs in the browser from this font file
# (style `font-faces`), so no glyph server and no download; DejaVu Sans covers Vietnamese.
# Debian's fonts-dejavu-core (scripts/setup-system.sh) ships it.
$(WEB_VENDOR)/fonts/DejaVuSans.ttf: /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
	mkdir -p $(WEB_VENDOR)/fonts
	cp $< $@

demo: setup
	$(VENV)/bin/ioc demo $(DEMO_ARGS)

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# schemathesis --checks all with every phase (fuzzing and stateful too): minutes, so not in `make test`
schemathesis: setup
	IOC_SCHEMATHESIS_PHASES=examples,coverage,fuzzing,stateful $(VENV)/bin/pytest \
	    -p no:cacheprovider --timeout 900 tests/server/test_openapi.py -k schemathesis_cli

bench: setup
	$(PY) bench/run_all.py

lint: system venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
