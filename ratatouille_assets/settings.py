"""One settings object, read from the environment once.

With nothing set, everything lives under ``./.ratatouille/`` (the embedded default): a file
warehouse, an Iceberg SQL catalog on SQLite, the landing zone, and DAGSTER_HOME. Pointing the
warehouse at ``s3://...`` and the catalog at ``postgresql://...`` is the whole switch to a server
stack; the fields for that exist already so the shape does not change later.

Secrets (S3 keys) are held as ``SecretStr``-like values that never print.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

ENV_PREFIX = "RATATOUILLE_"


class Secret(str):
    """A string that does not reveal itself in ``repr``/``str`` (logs, metadata, settings dumps)."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"

    def __str__(self) -> str:
        return "***" if self else ""

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def reveal(self) -> str:
        return str.__str__(self)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`get_settings`, not directly."""

    home: Path
    warehouse: str
    catalog_uri: str
    catalog_name: str
    landing: str
    quarantine: str
    dagster_home: Path
    sources_file: Path
    dbt_project_dir: Path
    soda_dir: Path
    duckdb_memory_limit: str
    duckdb_threads: int
    reporting_currency: str
    first_partition: str
    timezone: str
    commit_retries: int
    sensor_interval_seconds: int
    automation_lookback_days: int
    schedule_hour: int
    schedule_enabled: bool
    freshness_hours: int
    bronze_partitions_per_run: int
    max_file_bytes: int
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: Secret = Secret("")
    s3_secret_access_key: Secret = Secret("")

    @property
    def is_s3(self) -> bool:
        return self.warehouse.startswith("s3://")

    def public_dict(self) -> dict[str, str]:
        """Every setting as text, secrets masked: safe for logs, metadata and the UI."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if value is not None else ""
        return out


def _env(name: str, default: str) -> str:
    value = os.environ.get(ENV_PREFIX + name)
    return value if value not in (None, "") else default


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def load_settings(environ_home: str | None = None) -> Settings:
    """Read ``RATATOUILLE_*`` variables; unset ones fall back to the embedded default."""
    root = _project_root()
    # Default beside the project, not the working directory: dbt runs with its own cwd.
    home = Path(environ_home or _env("HOME", str(root / ".ratatouille"))).resolve()
    warehouse = _env("WAREHOUSE", str(home / "warehouse"))
    if not warehouse.startswith("s3://"):
        warehouse = str(Path(warehouse).resolve())
    catalog_uri = _env("CATALOG_URI", f"sqlite:///{home / 'catalog.db'}")
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or _env("DAGSTER_HOME", str(home / "dagster")))
    threads = int(_env("DUCKDB_THREADS", str(os.cpu_count() or 2)))
    if threads < 1:
        raise ValueError(f"{ENV_PREFIX}DUCKDB_THREADS must be >= 1, got {threads}")
    return Settings(
        home=home,
        warehouse=warehouse,
        catalog_uri=catalog_uri,
        catalog_name=_env("CATALOG_NAME", "ratatouille"),
        landing=_env("LANDING", str(home / "landing")),
        quarantine=_env("QUARANTINE", str(home / "quarantine")),
        dagster_home=dagster_home.resolve(),
        sources_file=Path(_env("SOURCES_FILE", str(root / "sources.yml"))).resolve(),
        dbt_project_dir=Path(_env("DBT_PROJECT_DIR", str(root / "dbt_project"))).resolve(),
        soda_dir=Path(_env("SODA_DIR", str(root / "soda"))).resolve(),
        duckdb_memory_limit=_env("DUCKDB_MEMORY_LIMIT", "4GB"),
        duckdb_threads=threads,
        reporting_currency=_env("REPORTING_CURRENCY", "USD"),
        first_partition=_env("FIRST_PARTITION", "2024-01-01"),
        timezone=_env("TIMEZONE", "UTC"),
        commit_retries=int(_env("COMMIT_RETRIES", "8")),
        sensor_interval_seconds=int(_env("SENSOR_INTERVAL_SECONDS", "30")),
        automation_lookback_days=int(_env("AUTOMATION_LOOKBACK_DAYS", "30")),
        schedule_hour=int(_env("SCHEDULE_HOUR", "1")),
        schedule_enabled=_env("SCHEDULE_ENABLED", "false").lower() in ("1", "true", "yes"),
        freshness_hours=int(_env("FRESHNESS_HOURS", "6")),
        bronze_partitions_per_run=int(_env("BRONZE_PARTITIONS_PER_RUN", "10")),
        max_file_bytes=int(_env("MAX_FILE_BYTES", str(2 * 1024**3))),
        s3_endpoint=_env("S3_ENDPOINT", "") or None,
        s3_region=_env("S3_REGION", "") or None,
        s3_access_key_id=Secret(_env("S3_ACCESS_KEY_ID", "")),
        s3_secret_access_key=Secret(_env("S3_SECRET_ACCESS_KEY", "")),
    )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, resolved on first use (never at import)."""
    return load_settings()
