"""sources.yml: the shipped file is valid, and mistakes are named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratatouille_assets.ingest.sources import SourceConfigError, load_sources, parse_sources

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_sources_are_valid():
    sources = load_sources(ROOT / "sources.yml")
    assert set(sources) == {"orders", "order_items", "customers", "products", "fx_rates"}
    assert {s.format for s in sources.values()} == {"csv", "jsonl", "parquet"}
    assert sources["order_items"].primary_key == ("order_id", "line_no")
    assert sources["orders"].landing_glob("2024-01-02") == "orders/2024-01-02/*.jsonl"


def good() -> dict:
    return {"format": "csv", "path": "x/{date}/*.csv", "columns": {"id": "bigint", "ts": "timestamp"},
            "primary_key": ["id"], "event_time": "ts"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "xml"}, "source 'shop': format 'xml' is not one of"),
        ({"path": "x/*.csv"}, "must contain '{date}'"),
        ({"path": "../x/{date}/*.csv"}, "must stay inside the landing zone"),
        ({"columns": {"id": "bigint", "ts": "timestampz"}}, "column 'ts': unknown type 'timestampz'"),
        ({"event_time": "created"}, "event_time 'created' is not a declared column"),
        ({"primary_key": ["nope"]}, "primary_key 'nope' is not a declared column"),
        ({"columns": {"_id": "bigint", "ts": "timestamp"}, "primary_key": ["_id"]}, "column '_id'"),
    ],
)
def test_mistakes_name_the_source_and_field(change, message):
    spec = {**good(), **change}
    with pytest.raises(SourceConfigError, match=None) as info:
        parse_sources({"sources": {"shop": spec}})
    assert message in str(info.value)


def test_missing_fields_are_listed():
    with pytest.raises(SourceConfigError, match="missing field\\(s\\): format, columns"):
        parse_sources({"sources": {"shop": {"path": "x/{date}/a.csv", "event_time": "ts"}}})


def test_the_projects_granularity_is_the_default_of_partitioned_sources_only():
    from ratatouille_assets.ingest.sources import parse_sources_file

    spec = {"format": "csv", "columns": {"id": "bigint"}}
    parsed = parse_sources_file({"partitions": {"start": "2020-01-01", "granularity": "month"}, "sources": {
        "daily": spec, "yearly": {**spec, "partition_granularity": "year"}, "lookup": {**spec, "partitioned": False}}})
    assert parsed.granularity == "month"
    assert {n: s.partition_granularity for n, s in parsed.sources.items()} == {"daily": "month", "yearly": "year", "lookup": "day"}
    assert parse_sources_file({"sources": {"daily": spec}}).sources["daily"].partition_granularity == "day"
    with pytest.raises(SourceConfigError, match=r"sources.yml: partitions.granularity 'week' is not one of day, month, year"):
        parse_sources_file({"partitions": {"granularity": "week"}, "sources": {"daily": spec}})
    with pytest.raises(SourceConfigError, match=r"partitions takes start .* and granularity"):
        parse_sources_file({"partitions": {"begin": "2020-01-01"}, "sources": {"daily": spec}})
