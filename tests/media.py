"""A camera for tests: a short HLS stream and a snapshot that ffmpeg makes from its test
pattern, served over HTTP by a tiny aiohttp app on 127.0.0.1 (a private address, so the media
proxy reaches it only when the test allow-lists it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from aiohttp import web

TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".jpg": "image/jpeg"}


def make_media(out: Path) -> Path:
    """``out/index.m3u8`` (3 one-second H.264 segments, a VOD playlist) and ``out/snap.jpg``."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is missing: scripts/setup-system.sh installs it"
    out.mkdir(parents=True, exist_ok=True)
    common = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
              "-i", "testsrc=size=320x180:rate=10"]
    subprocess.run([*common, "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10",
                    "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                    "-hls_playlist_type", "vod", str(out / "index.m3u8")], check=True, timeout=60)
    subprocess.run([*common, "-frames:v", "1", str(out / "snap.jpg")], check=True, timeout=60)
    return out


def camera_app(root: Path) -> web.Application:
    """Serves ``root``'s files with the types a camera sends."""

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = root / name
        if "/" in name or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(),
                            content_type=TYPES.get(path.suffix, "application/octet-stream"))

    app = web.Application()
    app.router.add_get("/cam/{name}", serve)
    return app
