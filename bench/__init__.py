"""``make bench``: the platform measured side by side with plain DuckDB on the same data.

See BENCHMARKS.md. Modules: ``measure`` (wall time and peak RSS of a process tree), ``sql``
(the dbt models' compiled SQL, for the plain-DuckDB side and history building), ``raw`` (plain
DuckDB: same SQL, same landing files, Parquet out), ``ours`` (one day through the platform: a
Dagster run of the whole graph), ``history`` (N days of Iceberg history), ``queries``
(dashboard query latency over gold), ``__main__`` (the plan per scale, the report).
"""
