"""The lakehouse as a Dagster resource: a thin handle over settings, catalog and DuckDB."""

from __future__ import annotations

import dagster as dg
import duckdb
from pyiceberg.catalog import Catalog

from ratatouille_assets.lakehouse import duck
from ratatouille_assets.lakehouse.catalog import load_catalog
from ratatouille_assets.settings import Settings, get_settings


class LakehouseResource(dg.ConfigurableResource):
    """Everything here is configured by RATATOUILLE_* variables (see settings.py)."""

    def settings(self) -> Settings:
        return get_settings()

    def catalog(self) -> Catalog:
        return load_catalog(self.settings())

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A connection to the run process's shared DuckDB database (see ``duck.session``)."""
        return duck.session(self.settings())
