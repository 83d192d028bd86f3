"""Secrets with hostile values (quotes, '@', ':', '%', a newline) never show: not in settings
dumps, not in `rat settings`, not in SQL a DuckDB error quotes back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.settings import SecretURI, get_settings, mask_uri
from tests.conftest import use_home

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ["abc'Quote Secr3tZZ", "p@ss@Secr3tZZ", "Secr3tZZ:colon/slash", "Secr3tZZ%41%", "two\nSecr3tZZ lines"]


@pytest.mark.parametrize(("uri", "shown"), [
    ("postgresql+psycopg2://rat:Secr3tZZ@db:5432/cat", "postgresql+psycopg2://rat:***@db:5432/cat"),
    ("postgresql+psycopg2://rat:***@Secr3tZZ@db:5432/cat", "postgresql+psycopg2://rat:***@db:5432/cat"),
    ("postgresql://rat:p@ss:Secr3tZZ@db/cat", "postgresql://rat:***@db/cat"),
    ("postgresql://rat@db/cat?password=Secr3tZZ&sslmode=require", "postgresql://rat@db/cat?password=***&sslmode=require"),
    ("postgresql://db/cat?sslmode=require&PASSWORD=Secr3tZZ", "postgresql://db/cat?sslmode=require&PASSWORD=***"),
    ("postgresql://rat@db/cat", "postgresql://rat@db/cat"),
    ("sqlite:////tmp/catalog.db", "sqlite:////tmp/catalog.db"),
])
def test_a_uri_shows_no_password_wherever_it_sits(uri, shown):
    assert mask_uri(uri) == shown
    assert str(SecretURI(uri)) == shown and "Secr3tZZ" not in repr(SecretURI(uri))


@pytest.mark.parametrize("secret", HOSTILE)
def test_an_s3_secret_with_sql_characters_configures_duckdb_and_never_shows(tmp_path, monkeypatch, secret):
    monkeypatch.setenv("RATATOUILLE_WAREHOUSE", "s3://lake/warehouse")
    monkeypatch.setenv("RATATOUILLE_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("RATATOUILLE_S3_ACCESS_KEY_ID", "AKIA'key@id")
    monkeypatch.setenv("RATATOUILLE_S3_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("RATATOUILLE_CATALOG_URI", "postgresql+psycopg2://rat@127.0.0.1:9/cat")
    monkeypatch.setenv("RATATOUILLE_CATALOG_PASSWORD", secret)
    settings = use_home(monkeypatch, tmp_path / "rt")
    conn = duck.connect(settings)
    # The secret exists (the quote did not end the literal and break the statement), and DuckDB's
    # own listing redacts it.
    (value,) = conn.execute("SELECT secret_string FROM duckdb_secrets() WHERE name = 'ratatouille_s3'").fetchone()
    assert "Secr3tZZ" not in value and "secret=redacted" in value
    # A DuckDB error about S3 does not quote the secret.
    with pytest.raises(duckdb.Error) as error:
        conn.execute("SELECT * FROM read_csv('s3://lake/none.csv')")
    assert "Secr3tZZ" not in str(error.value)
    shown = "\n".join(f"{k}={v}" for k, v in settings.public_dict().items()) + repr(settings)
    assert "Secr3tZZ" not in shown
    out = subprocess.run([sys.executable, "-m", "ratatouille_assets.cli", "settings"], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert "Secr3tZZ" not in out.stdout + out.stderr
    assert "RATATOUILLE_S3_SECRET_ACCESS_KEY=***" in out.stdout
    get_settings.cache_clear()


@pytest.mark.slow  # two failing Dagster runs
@pytest.mark.parametrize("failing", ["catalog", "warehouse"])
def test_a_failed_run_shows_no_hostile_secret_in_its_event_log_or_error(tmp_path, monkeypatch, failing):
    """A run that fails because the catalog (PostgreSQL) or the warehouse (S3) cannot be reached,
    with a secret full of quotes, '@', '%' and a newline: its events, its error and its logs hold
    no part of the secret that could identify it."""
    import dagster as dg
    from dagster._serdes import serialize_value

    from ratatouille_assets.definitions import build_definitions
    from tests.project import make_project

    secret = "abc'Q@te%41:Secr3tZZ\nline"
    landing = tmp_path / "landing"
    monkeypatch.setenv("RATATOUILLE_LANDING", str(landing))
    monkeypatch.setenv("RATATOUILLE_S3_ACCESS_KEY_ID", "AKIAHOSTILE")
    monkeypatch.setenv("RATATOUILLE_S3_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("RATATOUILLE_S3_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    if failing == "catalog":
        monkeypatch.setenv("RATATOUILLE_CATALOG_URI", "postgresql+psycopg2://rat@127.0.0.1:9/cat")
        monkeypatch.setenv("RATATOUILLE_CATALOG_PASSWORD", secret)
    else:
        monkeypatch.setenv("RATATOUILLE_WAREHOUSE", "s3://lake/warehouse")
    settings = use_home(monkeypatch, tmp_path / "rt")
    make_project(tmp_path / "project", monkeypatch, start="2024-03-01", sources="""
        feed:
          format: csv
          columns: {id: bigint, note: varchar}
    """)
    day = landing / "feed" / "2024-03-01"
    day.mkdir(parents=True)
    (day / "a.csv").write_text("id,note\n1,x\n")
    assert settings.landing == str(landing)

    defs = build_definitions()
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), selection=[dg.AssetKey(["bronze", "feed"])],
                                partition_key="2024-03-01", resources=dict(defs.resources), instance=instance,
                                raise_on_error=False)
        assert not result.success
        events = [serialize_value(e) for e in instance.all_logs(result.run_id)]
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.event_specific_data.error
    text = "\n".join(events) + error.to_string()
    # The failure is the one provoked, so the scan covers the path a secret would take.
    expected = 'connection to server at "127.0.0.1", port 9 failed' if failing == "catalog" else "127.0.0.1:9"
    assert expected in error.to_string(), error.to_string()[-2000:]
    fragments = ["Secr3tZZ", "abc'Q@te", "%41:Secr3t"]
    assert [f for f in fragments if f in text] == []
    get_settings.cache_clear()
