"""The layers, declared once: bronze (landing files as they came), silver, gold (dbt models).

A layer is a schema (Iceberg namespace), a Dagster group and the first part of every asset key.
dbt_project/macros/generate_schema_name.sql mirrors MODEL_LAYERS (a test keeps them equal).
"""

from __future__ import annotations

BRONZE = "bronze"
MODEL_LAYERS = ("silver", "gold")
LAYERS = (BRONZE, *MODEL_LAYERS)
