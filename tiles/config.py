"""Settings of the tile service (``[tiles]`` in the TOML file, ``IOC_TILES__*`` in the environment)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TilesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool_size: int = Field(
        default=8, ge=1, le=100,
        description="PostgreSQL connections for tile queries, apart from the main pool, so a map's"
                    " burst of tile requests never queues ingest, alarms or the API behind it",
    )
    cache_mb: int = Field(
        default=256, ge=0, le=65_536,
        description="in-memory LRU of encoded tiles; 0 turns the cache off (every tile is a query)",
    )
    version_check_s: float = Field(
        default=1.0, ge=0, le=60,
        description="how often, at most, the layer versions (counts, last update) are read",
    )
    live_ttl_s: float = Field(
        default=5.0, gt=0, le=3600,
        description="lifetime of tiles with live content (alarms, status counts), cached and in browsers",
    )
    detail_ttl_s: float = Field(
        default=300.0, gt=0, le=86_400,
        description="lifetime of device tiles in the server cache; they are also dropped as soon as"
                    " a device of their kind is added, moved or removed (live status comes over the"
                    " websocket, not in the tile)",
    )
    max_age_s: int = Field(
        default=60, ge=0, le=86_400,
        description="Cache-Control max-age of device and basemap tiles (revalidated by ETag after it)",
    )
    max_point_features: int = Field(
        default=6000, ge=1, le=1_000_000,
        description="a detail tile of a point kind holding more devices than this is served as grid"
                    " aggregates instead (features with agg='cell' and count, as below the kind's"
                    " detail zoom): about 60 bytes a lamp, so a tile stays under 500 KB at any"
                    " density",
    )
    grid_fold_s: float = Field(
        default=2.0, gt=0, le=3600,
        description="how often the device counts changed since (tile_grid_log, written by triggers)"
                    " are folded into the aggregate grid (tile_grid); tiles are exact meanwhile, this"
                    " only keeps the log short",
    )
