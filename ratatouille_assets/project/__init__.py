"""The project's own files and their contracts: sources.yml -> dbt sources, the dbt model contract,
the example shop. Knows nothing of Dagster: the definitions call it when they load."""
