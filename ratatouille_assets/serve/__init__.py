"""The SQL endpoint (``rat serve``): every table over the PostgreSQL wire protocol, read-only.

A room of its own that never imports Dagster: it reads the lakehouse as the SDK does.

- :mod:`.server` starts it: settings, authentication, TLS, signals.
- :mod:`.session` is one client connection: what it may run, its settings, time and row limits.
- :mod:`.engine` runs queries on the lakehouse's DuckDB, on a pool of threads.
- :mod:`.guard` keeps queries to reading tables; :mod:`.catalog` and :mod:`.rewrite` make
  DuckDB's catalog look like PostgreSQL's to BI tools.
- :mod:`.mimic` holds every use of pg-mimic's internals (the protocol library), pinned.
"""
