#!/usr/bin/env bash
# Installs the system packages ioc-server needs, only those missing, on Debian/Ubuntu:
# PostgreSQL with the PostGIS package of its installed major version, mosquitto,
# python3-venv, and GDAL's command-line tools (gdal-bin) for the OGC API tests. Uses
# apt-get as root, sudo otherwise. Safe to run again: it skips what is there.
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
updated=""

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: apt-get not found; install these yourself: $*" >&2
        exit 1
    fi
    if [ -z "$updated" ]; then
        $SUDO apt-get update -qq
        updated=1
    fi
    echo "setup: installing $*"
    $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_major() {
    ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sed -E 's#.*/postgresql/([0-9]+)/.*#\1#' | sort -n | tail -1
}

need=()
[ -n "$(pg_major)" ] || need+=(postgresql)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
# The web map: npm installs its libraries; the browser tests drive Debian's chromium
# (with a font, or headless text renders as boxes).
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
# also the font of the map's street names (`make web` copies DejaVuSans.ttf into vendor/fonts)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
# GDAL's ogrinfo: the tests read /ogc with it (OAPIF and MVT drivers), a client not written here.
command -v ogrinfo >/dev/null 2>&1 || need+=(gdal-bin)
# ffmpeg: the camera tests make a real HLS stream and a snapshot with it (tests/media.py).
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

major="$(pg_major)"
if [ ! -f "/usr/share/postgresql/${major}/extension/postgis.control" ]; then
    apt_install "postgresql-${major}-postgis-3"
fi

# Debian's postgresql package starts a system cluster we do not use; leave it alone.
echo "setup: system packages ready (PostgreSQL ${major} + PostGIS, mosquitto, node, chromium, GDAL, ffmpeg)"
