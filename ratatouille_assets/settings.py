"""One settings object, read from the environment once.

With nothing set, everything lives under ``./.ratatouille/`` (the embedded default): a file
warehouse, an Iceberg SQL catalog on SQLite, the landing zone, and DAGSTER_HOME. Pointing the
warehouse at ``s3://...`` and the catalog at ``postgresql://...`` is the whole switch to a server
stack; the fields for that exist already so the shape does not change later.

Secrets (S3 keys, the catalog's password, the SQL endpoint's password) are held as ``Secret``
values that never print: ``str``, ``repr`` and f-strings show ``***``; only ``reveal()`` hands the
value to a client.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tempfile
import urllib.parse
from pathlib import Path

ENV_PREFIX = "RATATOUILLE_"
# How the steps of a run execute: one process (default), or one Kubernetes Job per step.
EXECUTORS = ("in_process", "k8s_job")


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


class SecretURI(Secret):
    """A connection URI whose password never prints: ``postgresql://user:***@host/db``."""

    def __str__(self) -> str:
        return mask_uri(str.__str__(self))

    def __repr__(self) -> str:
        return f"SecretURI({str(self)!r})"


_SCHEME = re.compile(r"^([a-z0-9+.-]+://)(.*)$", re.IGNORECASE | re.DOTALL)
_SECRET_PARAMETER = re.compile(r"([?&;](?:password|passwd|pwd|pass|secret|token|sslpassword|access_key|secret_key)=)[^&;#]*",
                               re.IGNORECASE)


def mask_uri(uri: str) -> str:
    """``uri`` with its password and secret query parameters shown as ``***``.

    The user info ends at the *last* ``@`` (a raw ``@`` or ``:`` in a password must not leave its
    tail visible), and ``?password=``, ``&token=`` and the like are masked too."""
    match = _SCHEME.match(uri)
    if match is None:
        return _SECRET_PARAMETER.sub(r"\1***", uri)
    scheme, rest = match.groups()
    # Host and path hold no '@'; the user info is everything before the last one.
    userinfo, at, location = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        rest = f"{user}:***@{location}" if colon else f"{user}@{location}"
    return scheme + _SECRET_PARAMETER.sub(r"\1***", rest)


def with_password(uri: str, password: str) -> str:
    """``uri`` with ``password`` set in its user info (URL-quoted); a URI without a user gets none."""
    match = re.match(r"^([a-z0-9+.-]+://)([^:/@]+)(?::[^@]*)?@(.*)$", uri, re.IGNORECASE | re.DOTALL)
    if not match:
        raise ValueError(
            f"{ENV_PREFIX}CATALOG_PASSWORD is set but {ENV_PREFIX}CATALOG_URI names no user "
            "(expected postgresql+psycopg2://<user>@<host>:<port>/<database>)"
        )
    return f"{match[1]}{match[2]}:{urllib.parse.quote(password, safe='')}@{match[3]}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`get_settings`, not directly."""

    home: Path
    warehouse: str
    catalog_uri: SecretURI
    catalog_name: str
    landing: str
    quarantine: str
    dagster_home: Path
    sources_file: Path
    dbt_project_dir: Path
    soda_dir: Path
    duckdb_memory_limit: str
    duckdb_threads: int
    # Where DuckDB spills what does not fit in duckdb_memory_limit. DuckDB's own default is ".tmp"
    # in the working directory, which the image's app user cannot create (/app is root's): a big
    # sort in a container failed instead of spilling.
    duckdb_temp_directory: str
    reporting_currency: str
    timezone: str
    commit_retries: int
    sensor_interval_seconds: int
    automation_lookback_days: int
    schedule_hour: int
    schedule_enabled: bool
    freshness_hours: int
    bronze_partitions_per_run: int
    bronze_workers: int
    max_file_bytes: int
    executor: str = "in_process"
    # Dev mode: every write goes to this Iceberg branch of each table, every read sees it where it
    # exists and main otherwise; main is never written. "main": the normal mode.
    branch: str = "main"
    # Write-audit-publish: each run writes every table to its own audit branch, and main (or the
    # dev branch) moves to it only when the table's blocking checks passed. Off: writes go straight
    # to main and a failed check is seen after the fact.
    wap: bool = True
    # Audit branches of runs whose checks failed are kept this many days for inspection, then
    # removed by maintenance (`rat maintain`, `rat sweep`).
    audit_retention_days: int = 7
    # Maintenance (lakehouse/maintenance.py): a snapshot expires once it is older than keep_days
    # AND not among a table's newest keep_snapshots (branch and tag heads never expire); an
    # unreferenced file is an orphan once older than orphan_minutes; compaction merges a
    # partition's small files towards target_file_mb. The daily job runs at maintenance_hour.
    keep_days: int = 7
    keep_snapshots: int = 100
    orphan_minutes: int = 60
    target_file_mb: int = 128
    maintenance_hour: int = 3
    maintenance_enabled: bool = True
    # Under the embedded instance, runs fork from a warm worker (defs/launcher.py); off: a fresh process each.
    warm_runs: bool = True
    executor_max_concurrent: int = 4
    # In-process executor: steps of one run that execute at once, each on a thread of the run
    # process (defs/executor.py); 1 runs them one after another (Dagster's in_process executor).
    step_threads: int = 2
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: Secret = Secret("")
    s3_secret_access_key: Secret = Secret("")
    # `rat serve`: every table over the PostgreSQL protocol, read-only, for BI tools. Loopback by
    # default (a container sets sql_host 0.0.0.0); 5433 leaves 5432 to a PostgreSQL on the same
    # host. One user, whose password has no default: the server refuses to start without one.
    # Each query is interrupted after sql_statement_timeout_seconds and refused beyond
    # sql_row_limit rows; with a certificate and key, clients must connect over TLS.
    sql_host: str = "127.0.0.1"
    sql_port: int = 5433
    sql_user: str = "ratatouille"
    sql_password: Secret = Secret("")
    sql_statement_timeout_seconds: int = 30
    sql_row_limit: int = 100_000
    sql_tls_cert: str | None = None
    sql_tls_key: str | None = None

    @property
    def is_s3(self) -> bool:
        """The warehouse is on S3 (the catalog's file IO, the table locations)."""
        return self.warehouse.startswith("s3://")

    @property
    def uses_s3(self) -> bool:
        """Anything DuckDB reads or writes is on S3: the warehouse, the landing zone or the quarantine."""
        return any(v.startswith("s3://") for v in (self.warehouse, self.landing, self.quarantine))

    def public_dict(self) -> dict[str, str]:
        """Every setting as text, secrets masked: safe for logs, metadata and the UI."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if value is not None else ""
        return out


# Branch names the platform keeps for itself: write-audit-publish's per-run audit branches.
RESERVED_BRANCH_PREFIX = "audit-"


def _branch(name: str) -> str:
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}", name):
        raise ValueError(f"{ENV_PREFIX}BRANCH={name!r}: a branch name is letters, digits, '.', '_', '-' and '/' "
                         "(at most 100, starting with a letter or digit)")
    if name.startswith(RESERVED_BRANCH_PREFIX):
        raise ValueError(f"{ENV_PREFIX}BRANCH={name!r}: names starting with {RESERVED_BRANCH_PREFIX!r} are the "
                         "platform's audit branches; pick another name")
    return name


def _switch(name: str, default: str) -> bool:
    value = _env(name, default).strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"{ENV_PREFIX}{name} must be on or off, got {value!r}")


def _at_least(name: str, default: str, low: int) -> int:
    value = int(_env(name, default))
    if value < low:
        raise ValueError(f"{ENV_PREFIX}{name} must be >= {low}, got {value}")
    return value


def _hour(name: str, default: str) -> int:
    value = int(_env(name, default))
    if not 0 <= value <= 23:
        raise ValueError(f"{ENV_PREFIX}{name} must be an hour of the day, 0 to 23, got {value}")
    return value


def _env(name: str, default: str) -> str:
    value = os.environ.get(ENV_PREFIX + name)
    return value if value not in (None, "") else default


def project_root() -> Path:
    """The project folder: sources.yml, dbt_project/ and soda/ sit here."""
    return Path(__file__).resolve().parent.parent


def _beside_warehouse(warehouse: str, name: str, home: Path) -> str:
    """Landing and quarantine default to siblings of an S3 warehouse (``s3://b/warehouse`` ->
    ``s3://b/landing``; ``s3://b`` -> ``s3://b/landing``), else to folders under the home."""
    if not warehouse.startswith("s3://"):
        return str(home / name)
    bucket_and_prefix = warehouse[len("s3://"):].rstrip("/")
    parent = bucket_and_prefix.rsplit("/", 1)[0] if "/" in bucket_and_prefix else bucket_and_prefix
    return f"s3://{parent}/{name}"


def _endpoint(value: str) -> str | None:
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(
            f"{ENV_PREFIX}S3_ENDPOINT must start with http:// or https:// (got {value!r}), "
            "e.g. http://minio:9000"
        )
    return value.rstrip("/")


def _port(name: str, default: str) -> int:
    value = int(_env(name, default))
    if not 1 <= value <= 65535:
        raise ValueError(f"{ENV_PREFIX}{name} must be a TCP port, 1 to 65535, got {value}")
    return value


def _tls_pair() -> tuple[str | None, str | None]:
    cert, key = _env("SQL_TLS_CERT", "") or None, _env("SQL_TLS_KEY", "") or None
    if (cert is None) != (key is None):
        raise ValueError(f"{ENV_PREFIX}SQL_TLS_CERT and {ENV_PREFIX}SQL_TLS_KEY go together: set both (PEM files) "
                         "or neither")
    return cert, key


def load_settings(environ_home: str | None = None) -> Settings:
    """Read ``RATATOUILLE_*`` variables; unset ones fall back to the embedded default."""
    root = project_root()
    # Default beside the project, not the working directory: dbt runs with its own cwd.
    home = Path(environ_home or _env("HOME", str(root / ".ratatouille"))).resolve()
    warehouse = _env("WAREHOUSE", str(home / "warehouse"))
    if not warehouse.startswith("s3://"):
        warehouse = str(Path(warehouse).resolve())
    # Percent-encoded: SQLAlchemy decodes the path, so a home with '%', '?' or '#' in its name
    # would otherwise open another file (or none).
    catalog_uri = _env("CATALOG_URI", f"sqlite:///{urllib.parse.quote(str(home / 'catalog.db'), safe='/')}")
    if catalog_uri.startswith("postgresql://"):
        catalog_uri = "postgresql+psycopg2://" + catalog_uri.removeprefix("postgresql://")
    if password := os.environ.get(ENV_PREFIX + "CATALOG_PASSWORD"):
        # Lets the URI sit in a ConfigMap or .env while the password comes from a Secret.
        catalog_uri = with_password(catalog_uri, password)
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or _env("DAGSTER_HOME", str(home / "dagster")))
    executor = _env("EXECUTOR", "in_process")
    if executor not in EXECUTORS:
        raise ValueError(f"{ENV_PREFIX}EXECUTOR must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    bronze_workers = int(_env("BRONZE_WORKERS", "2"))
    if bronze_workers < 1:
        raise ValueError(f"{ENV_PREFIX}BRONZE_WORKERS must be >= 1, got {bronze_workers}")
    executor_max_concurrent = int(_env("EXECUTOR_MAX_CONCURRENT", "4"))
    if executor_max_concurrent < 1:
        raise ValueError(f"{ENV_PREFIX}EXECUTOR_MAX_CONCURRENT must be >= 1, got {executor_max_concurrent}")
    sql_tls_cert, sql_tls_key = _tls_pair()
    threads = int(_env("DUCKDB_THREADS", str(os.cpu_count() or 2)))
    if threads < 1:
        raise ValueError(f"{ENV_PREFIX}DUCKDB_THREADS must be >= 1, got {threads}")
    return Settings(
        home=home,
        warehouse=warehouse,
        catalog_uri=SecretURI(catalog_uri),
        catalog_name=_env("CATALOG_NAME", "ratatouille"),
        landing=_env("LANDING", _beside_warehouse(warehouse, "landing", home)),
        quarantine=_env("QUARANTINE", _beside_warehouse(warehouse, "quarantine", home)),
        dagster_home=dagster_home.resolve(),
        sources_file=Path(_env("SOURCES_FILE", str(root / "sources.yml"))).resolve(),
        dbt_project_dir=Path(_env("DBT_PROJECT_DIR", str(root / "dbt_project"))).resolve(),
        soda_dir=Path(_env("SODA_DIR", str(root / "soda"))).resolve(),
        duckdb_memory_limit=_env("DUCKDB_MEMORY_LIMIT", "4GB"),
        duckdb_threads=threads,
        duckdb_temp_directory=_env("DUCKDB_TEMP_DIRECTORY", "") or os.path.join(tempfile.gettempdir(), "ratatouille-duckdb"),
        reporting_currency=_env("REPORTING_CURRENCY", "USD"),
        timezone=_env("TIMEZONE", "UTC"),
        commit_retries=int(_env("COMMIT_RETRIES", "8")),
        sensor_interval_seconds=int(_env("SENSOR_INTERVAL_SECONDS", "30")),
        automation_lookback_days=int(_env("AUTOMATION_LOOKBACK_DAYS", "30")),
        schedule_hour=int(_env("SCHEDULE_HOUR", "1")),
        schedule_enabled=_env("SCHEDULE_ENABLED", "false").lower() in ("1", "true", "yes"),
        freshness_hours=int(_env("FRESHNESS_HOURS", "6")),
        bronze_partitions_per_run=int(_env("BRONZE_PARTITIONS_PER_RUN", "0")),
        bronze_workers=bronze_workers,
        max_file_bytes=int(_env("MAX_FILE_BYTES", str(2 * 1024**3))),
        executor=executor,
        executor_max_concurrent=executor_max_concurrent,
        step_threads=_at_least("STEP_THREADS", "2", 1),
        branch=_branch(_env("BRANCH", "main")),
        wap=_switch("WAP", "on"),
        audit_retention_days=_at_least("AUDIT_RETENTION_DAYS", "7", 0),
        keep_days=_at_least("KEEP_DAYS", "7", 0),
        keep_snapshots=_at_least("KEEP_SNAPSHOTS", "100", 1),
        orphan_minutes=_at_least("ORPHAN_MINUTES", "60", 0),
        target_file_mb=_at_least("TARGET_FILE_MB", "128", 1),
        maintenance_hour=_hour("MAINTENANCE_HOUR", "3"),
        maintenance_enabled=_switch("MAINTENANCE_ENABLED", "on"),
        warm_runs=_switch("WARM_RUNS", "on"),
        s3_endpoint=_endpoint(_env("S3_ENDPOINT", "")),
        s3_region=_env("S3_REGION", "") or None,
        s3_access_key_id=Secret(_env("S3_ACCESS_KEY_ID", "")),
        s3_secret_access_key=Secret(_env("S3_SECRET_ACCESS_KEY", "")),
        sql_host=_env("SQL_HOST", "127.0.0.1"),
        sql_port=_port("SQL_PORT", "5433"),
        sql_user=_env("SQL_USER", "ratatouille"),
        sql_password=Secret(_env("SQL_PASSWORD", "")),
        sql_statement_timeout_seconds=_at_least("SQL_STATEMENT_TIMEOUT_SECONDS", "30", 1),
        sql_row_limit=_at_least("SQL_ROW_LIMIT", "100000", 1),
        sql_tls_cert=sql_tls_cert,
        sql_tls_key=sql_tls_key,
    )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, resolved on first use (never at import)."""
    return load_settings()
