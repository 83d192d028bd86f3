"""Dagster definitions only: assets, checks, jobs, resources. Storage logic lives in lakehouse/."""
