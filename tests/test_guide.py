"""docs/your-own-data.md, followed as written: every ```bash block, in order, in a fresh clone of
this working tree (``make install`` builds the clone's own .venv from the uv cache), with no
RATATOUILLE_* setting. Then gold is compared with a computation of its own from the landing files
the guide made up (weather stations and their readings), and the rejected rows are checked."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from tests.project import ROOT, working_tree_repo

pytestmark = pytest.mark.slow

GUIDE = ROOT / "docs" / "your-own-data.md"
BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def guide_blocks() -> list[str]:
    return BLOCK.findall(GUIDE.read_text())


def independent_station_daily(landing: Path) -> list[tuple]:
    """gold.station_daily from the CSV files in plain DuckDB: the newest version of each reading,
    readings with a time and a plausible temperature, per station and day."""
    return duckdb.connect().execute(f"""
        WITH raw AS (
            SELECT * FROM read_csv('{landing}/readings/*/*.csv', header = true, all_varchar = true)
        ),
        typed AS (
            SELECT reading_id, upper(trim(station_id)) AS station_id, TRY_CAST(measured_at AS TIMESTAMP) AS measured_at,
                   CAST(temperature_c AS DOUBLE) AS temperature_c, CAST(sent_at AS TIMESTAMP) AS sent_at
            FROM raw
        ),
        latest AS (
            SELECT * FROM typed QUALIFY row_number() OVER (PARTITION BY reading_id ORDER BY sent_at DESC) = 1
        ),
        exports AS (  -- the first stations export (archived by the guide), then the newest: newest wins per station
            SELECT *, 1 AS n FROM read_csv('{landing.parent}/archive/stations-*.csv', header = true)
            UNION ALL BY NAME SELECT *, 2 AS n FROM read_csv('{landing}/stations/*.csv', header = true)
        ),
        stations AS (SELECT * FROM exports QUALIFY row_number() OVER (PARTITION BY station_id ORDER BY n DESC) = 1)
        SELECT CAST(measured_at AS DATE), s.station_id, s.name, s.city, count(*), min(temperature_c),
               max(temperature_c), round(avg(temperature_c), 2)
        FROM latest JOIN stations s USING (station_id)
        WHERE measured_at IS NOT NULL AND temperature_c BETWEEN -80 AND 60
        GROUP BY ALL ORDER BY 1, 2
    """).fetchall()


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    base = tmp_path_factory.mktemp("guide")
    source = working_tree_repo(base / "src")
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RATATOUILLE_", "DAGSTER_", "PYTEST_"))}
    outputs, started = [], time.monotonic()
    for number, block in enumerate(guide_blocks(), start=1):
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=clone, env=env, capture_output=True,
                             text=True, timeout=1200)
        outputs.append(run.stdout + run.stderr)
        assert run.returncode == 0, f"guide block {number} failed (rc {run.returncode}):\n{block}\n---\n{outputs[-1][-6000:]}"
    print(f"the guide, end to end: {time.monotonic() - started:.0f} s for {len(outputs)} blocks")
    return clone, outputs


def query(clone: Path, sql: str) -> list[tuple]:
    """Read the clone's lakehouse with its own rat, as CSV."""
    run = subprocess.run([str(clone / ".venv" / "bin" / "rat"), "query", "--csv", sql], cwd=clone,
                         capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if not k.startswith(("RATATOUILLE_", "DAGSTER_"))})
    lines = run.stdout.strip().splitlines()[1:]
    return [tuple(line.split(",")) for line in lines]


def test_the_guide_has_runnable_steps():
    blocks = guide_blocks()
    assert len(blocks) >= 10
    assert any("rat example remove" in b for b in blocks) and any("rat materialize" in b for b in blocks)


def test_gold_equals_an_independent_computation_of_the_made_up_data(guide):
    clone, _ = guide
    got = query(clone, "SELECT reading_date, station_id, station_name, city, readings, min_temperature_c, "
                       "max_temperature_c, avg_temperature_c FROM gold.station_daily ORDER BY 1, 2")
    expected = [tuple(str(v) for v in row) for row in independent_station_daily(clone / ".ratatouille" / "landing")]
    assert got == expected
    assert len(got) == 3 * 7
    counts = {(row[0], row[1]): int(row[4]) for row in got}
    assert counts[("2025-03-07", "ST-01")] == 5  # 4 of its own + the late reading, landed on 03-08
    assert counts[("2025-03-03", "ST-03")] == 4  # its 18:00 reading landed a day late, in 03-04's file
    assert counts[("2025-03-06", "ST-01")] == 3  # the implausible one is rejected
    first = query(clone, "SELECT temperature_c FROM silver.readings WHERE reading_id = 'ST-01-2025030200'")
    assert first == [("3.3",)]  # the corrected re-send won


def test_the_stations_export_of_changes_is_merged_and_keeps_the_stations_it_does_not_list(guide):
    clone, _ = guide
    got = query(clone, "SELECT station_id, name, city, elevation_m FROM silver.stations ORDER BY 1")
    assert got == [("ST-01", "Harbour", "Brest", "12"), ("ST-02", "Hill", "Brest", "195"),
                   ("ST-03", "Airport", "Rennes", "37"), ("ST-04", "Lighthouse", "Brest", "8")]
    assert query(clone, "SELECT count(*) FROM bronze.stations") == [("2",)]  # bronze holds the newest export


def test_the_station_history_holds_every_version_of_every_station(guide):
    clone, _ = guide
    landing = clone / ".ratatouille" / "landing"
    # Independently: every row of every export, one version per station and updated_at, each
    # closed where the station's next version starts.
    expected = duckdb.connect().execute(f"""
        SELECT station_id, CAST(elevation_m AS VARCHAR), CAST(updated_at AS VARCHAR),
               CAST(lead(updated_at) OVER w AS VARCHAR), CASE WHEN lead(updated_at) OVER w IS NULL THEN 'True' ELSE 'False' END
        FROM (SELECT DISTINCT station_id, elevation_m, CAST(updated_at AS TIMESTAMP) AS updated_at FROM read_csv(
                  ['{landing.parent}/archive/stations-2025-03-01.csv', '{landing}/stations/stations.csv'], header = true))
        WINDOW w AS (PARTITION BY station_id ORDER BY updated_at) ORDER BY 1, 3
    """).fetchall()
    got = query(clone, "SELECT station_id, elevation_m, valid_from, valid_to, is_current FROM gold.station_history ORDER BY 1, 3")
    assert got == [tuple("" if v is None else v for v in row) for row in expected]
    assert [r for r in got if r[0] == "ST-02"] == [("ST-02", "190", "2025-03-01 08:00:00", "2025-03-08 09:00:00", "False"),
                                                  ("ST-02", "195", "2025-03-08 09:00:00", "", "True")]


def test_the_rejected_rows_say_why_and_nothing_vanished(guide):
    clone, _ = guide
    rejected = query(clone, "SELECT reading_id, _reject_reason, _landing_date FROM silver.readings__rejected ORDER BY 1")
    assert rejected == [("ST-01-2025030612", "implausible_temperature", "2025-03-06"),
                        ("ST-02-NO-TIME", "missing_partition_value", "2025-03-05")]
    kept = query(clone, "SELECT count(*) FROM silver.readings")[0][0]
    distinct = query(clone, "SELECT count(DISTINCT reading_id) FROM bronze.readings")[0][0]
    assert int(kept) + len(rejected) == int(distinct)


def test_the_guide_ends_with_the_example_back_beside_the_users_sources(guide):
    clone, outputs = guide
    assert (clone / "dbt_project" / "models" / "example" / "gold" / "kpi_daily_sales.sql").exists()
    sources = (clone / "sources.yml").read_text()
    assert "readings:" in sources and "  orders:" in sources
    assert "Validation successful" in outputs[-1]
