# ioc-server: the Python server. PostGIS and mosquitto run as their own containers
# (compose.yaml).
# The web pages' browser libraries (maplibre-gl, terra-draw, uplot, hls.js, swagger-ui), from
# npm at build time by the same Makefile target as `make web`: the image serves them itself,
# nothing from a CDN.
FROM node:20-bookworm AS web
# the street names' font (DejaVu Sans, with Vietnamese), copied into vendor/fonts by `make web`
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile package.json package-lock.json ./
RUN make web

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY --from=web /src/server/static/vendor ./server/static/vendor
COPY adapters ./adapters
COPY geo ./geo
COPY rules ./rules
COPY tiles ./tiles
COPY migrations ./migrations
# The data directory (IOC_DATA_DIR): citizens' and crews' photos; compose.yaml keeps it on a volume.
RUN pip install . && useradd --system --no-create-home ioc \
    && mkdir -p /var/lib/ioc && chown ioc /var/lib/ioc
ENV IOC_DATA_DIR=/var/lib/ioc
USER ioc
EXPOSE 8080
ENV IOC_HTTP_HOST=0.0.0.0 IOC_HTTP_PORT=8080
# Migrations are idempotent: each start brings the schema to head, then serves.
CMD ["sh", "-c", "ioc migrate && ioc serve"]
