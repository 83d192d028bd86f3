"""Data quality: SodaCL files in soda/ -> named checks -> scans over Iceberg through DuckDB.

Never imports Dagster: defs/ turns these checks into asset checks, and the dbt plugin runs them
right after a model is written.
"""
