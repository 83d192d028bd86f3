"""Storage: the Iceberg catalog, the one write path, reads, and DuckDB connections.

Nothing in here knows Dagster: callers pass run ids and partition keys as plain values.
"""
