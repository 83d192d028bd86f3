"""``rat``: the command line as a user runs it (a subprocess for ``rat validate``, ``main()`` in
process otherwise), and the hints it gives when a day is not a partition."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa

from ratatouille_assets import cli, materialize
from ratatouille_assets.client import _partition_hint
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.lakehouse.write import Window, write_window
from tests.project import ROOT

RAT = Path(sys.executable).parent / "rat"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no RATATOUILLE_* or DAGSTER_HOME of the test session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATATOUILLE_") and k != "DAGSTER_HOME"}
    return {**env, **extra}


def test_validate_succeeds_on_a_home_that_does_not_exist_yet(tmp_path):
    """`make validate` on a fresh checkout used to fail with "$DAGSTER_HOME ... is not a directory"."""
    home = tmp_path / "new-home"
    env = clean_env(RATATOUILLE_HOME=str(home))
    assert not home.exists()
    result = subprocess.run([str(RAT), "validate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Validation successful" in output
    assert (home / "dagster" / "dagster.yaml").read_bytes() == (ROOT / "dagster.yaml").read_bytes()


def test_materialize_before_the_first_partition_names_the_setting_without_a_server(settings, capsys):
    code = materialize.main(["--from", "2013-01-01", "--to", "2013-01-02"])
    out = capsys.readouterr().out
    assert code == 2, out
    assert "2013-01-01" in out and "partitions.start" in out and "sources.yml" in out
    assert "partitions.start: 2013-01-01" in out  # the value to set, not just the setting's name
    assert not (Path(settings.dagster_home) / "history").exists()  # refused before the instance (run storage) opened


def test_materialize_of_a_day_that_has_not_ended_is_refused(settings, capsys):
    today = dt.date.today()
    code = materialize.main(["--from", (today - dt.timedelta(days=1)).isoformat(), "--to", today.isoformat()])
    out = capsys.readouterr().out
    assert code == 2, out
    assert f"{today.isoformat()} is not a partition yet" in out
    assert (today - dt.timedelta(days=1)).isoformat() in out  # the last day that is one


def test_rat_without_arguments_lists_the_commands_and_an_unknown_one_exits_2(capsys):
    assert cli.main([]) == 0
    listing = capsys.readouterr().out
    lines = {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}
    assert {"materialize", "query", "validate", "example", "backfill", "generate"} <= lines
    assert set(cli.COMMANDS) <= lines

    assert cli.main(["no-such-command"]) == 2
    assert "usage: rat <command>" in capsys.readouterr().out


def test_query_prints_the_result_as_a_table_or_as_csv(settings, capfd):
    day = dt.date(2024, 1, 1)
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "day": [day] * 3})
    write_window(load_catalog(settings), "gold.t", data, window=Window("day", day, day), run_id="r1")

    assert cli.main(["query", "SELECT count(*) AS n, max(id) AS top FROM gold.t"]) == 0
    rows = [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in capfd.readouterr().out.splitlines() if line.strip().startswith("│")]
    assert rows == [["n", "top"], ["int64", "int64"], ["3", "3"]]

    assert cli.main(["query", "--csv", "SELECT count(*) AS n FROM gold.t"]) == 0
    assert capfd.readouterr().out.splitlines() == ["n", "3"]

    assert cli.main(["query", "SELECT * FROM gold.no_such_table"]) == 1
    assert "no_such_table" in capfd.readouterr().err


def test_query_writes_csv_json_lines_and_parquet_files_and_schema_and_the_shell_read_the_tables(settings, capfd, tmp_path):
    import json
    import subprocess

    import pyarrow.parquet as pq

    day = dt.date(2024, 3, 9)
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "day": [day] * 3, "price": pa.array([1.5, None, 3.25]),
                     "label": ["a", "b, with a comma", None]})
    write_window(load_catalog(settings), "gold.priced", data, window=Window("day", day, day), run_id="r1")
    sql = "SELECT * FROM gold.priced ORDER BY id"

    assert cli.main(["query", "--format", "json", sql]) == 0
    assert [json.loads(line) for line in capfd.readouterr().out.splitlines()] == [
        {"id": 1, "day": "2024-03-09", "price": 1.5, "label": "a"},
        {"id": 2, "day": "2024-03-09", "price": None, "label": "b, with a comma"},
        {"id": 3, "day": "2024-03-09", "price": 3.25, "label": None}]
    out = tmp_path / "priced.csv"
    assert cli.main(["query", sql, "--output", str(out)]) == 0  # the suffix picks CSV
    assert out.read_text().splitlines() == ["id,day,price,label", "1,2024-03-09,1.5,a", '2,2024-03-09,,"b, with a comma"',
                                            "3,2024-03-09,3.25,"]
    parquet = tmp_path / "priced.parquet"
    assert cli.main(["query", sql, "--format", "parquet", "--output", str(parquet)]) == 0
    assert pq.read_table(parquet).to_pylist() == data.to_pylist()
    assert cli.main(["query", sql, "--format", "parquet"]) == 2
    assert "give --output FILE" in capfd.readouterr().err
    # A file never gets the terminal's table (it shows the first --max-rows rows): refused, not cut.
    assert cli.main(["query", sql, "--output", str(tmp_path / "priced.txt")]) == 2
    assert "give --format csv, json or parquet" in capfd.readouterr().err
    assert not (tmp_path / "priced.txt").exists()
    many = tmp_path / "many.jsonl"
    assert cli.main(["query", "SELECT range AS n FROM range(250)", "--output", str(many), "--max-rows", "10"]) == 0
    assert [json.loads(line)["n"] for line in many.read_text().splitlines()] == list(range(250))

    assert cli.main(["schema", "gold.priced"]) == 0
    assert [line.split()[:2] for line in capfd.readouterr().out.splitlines()] == [
        ["id", "BIGINT"], ["day", "DATE"], ["price", "DOUBLE"], ["label", "VARCHAR"]]
    assert cli.main(["schema", "gold.nope"]) == 2

    # The shell reads statements ending in ';' (here from a pipe, as a script would).
    shell = subprocess.run([sys.executable, "-m", "ratatouille_assets.cli", "sql"], capture_output=True, text=True,
                           input=".tables\nSELECT count(*) AS n,\n  sum(price) AS total FROM gold.priced;\n")
    assert shell.returncode == 0, shell.stderr
    assert "gold.priced" in shell.stdout and "4.75" in shell.stdout
    bad = subprocess.run([sys.executable, "-m", "ratatouille_assets.cli", "sql"], capture_output=True, text=True,
                         input="SELECT * FROM gold.nope;\n")
    assert bad.returncode == 1 and "nope does not exist" in bad.stderr


def dagster_range_error(start: str, end: str, first_partition: str) -> str:
    """The message Dagster's webserver answers a backfill of ``start``..``end`` with (a PythonError),
    raised by Dagster itself on a partitions definition starting at ``first_partition``."""
    from dagster._utils.error import serializable_error_info_from_exc_info

    partitions_def = dg.DailyPartitionsDefinition(start_date=first_partition)
    try:
        partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
    except Exception:  # noqa: BLE001 - whatever Dagster raises is what the server reports
        return serializable_error_info_from_exc_info(sys.exc_info()).message
    raise AssertionError(f"Dagster accepted {start}..{end} on partitions from {first_partition}")


def test_the_backfill_hint_turns_dagsters_range_error_into_the_setting_to_change():
    message = dagster_range_error("2013-01-01", "2013-01-02", "2024-01-01")
    assert "Partition key range start 2013-01-01 is before the partitions definition start time" in message
    answer = f"PythonError: {message}"  # what launch_backfill gets back from launchPartitionBackfill
    hint = _partition_hint(answer, "2013-01-01", "http://127.0.0.1:3000")
    assert hint.startswith("2013-01-01 is before the first daily partition of the code location at http://127.0.0.1:3000")
    assert "partitions.start" in hint and "sources.yml to 2013-01-01 or earlier" in hint
    dagster_line = next(line.strip() for line in answer.splitlines() if "start time" in line)
    assert "Partition key range start 2013-01-01 is before the partitions definition start time 2024-01-01" in dagster_line
    assert hint.endswith(f"(Dagster: {dagster_line})")  # Dagster's own words stay, after the hint
    # Any other error passes through as Dagster said it.
    other = "PythonError: something else went wrong"
    assert _partition_hint(other, "2013-01-01", "http://127.0.0.1:3000") == other
