{#-
  Materialize a model as an Apache Iceberg table through ratatouille_assets.lakehouse.

  The compiled SQL becomes a staging view; the `ratatouille` dbt-duckdb plugin reads it as Arrow
  and hands it to the platform's one write path, which replaces exactly the rows this run owns
  (the --vars window on `partition_by`, or the whole table) in one atomic Iceberg commit, then
  re-points the model's view at the new snapshot so later models read it.

  config:
    partition_by:     a DATE or TIMESTAMP column; the table is partitioned on it (its day) and the
                      run replaces the days min_date..max_date. Omit for tables rebuilt whole
                      (dimensions).
    partition_granularity: day | month | year (default: sources.yml's partitions.granularity,
                      passed as the var partition_granularity, else day): how coarse the Iceberg
                      partitions on partition_by are. Dagster partitions stay daily and a run
                      still replaces exactly its days; month or year keeps a small daily model in
                      a few files.
    on_schema_change: append_new_columns (default) | sync_all_columns | fail.
    write_audit_publish: true (default) | false. In a Dagster run the model is written to the run's
                      audit branch and published once its checks passed; false writes it
                      straight to the readers' branch (RATATOUILLE_WAP=off: every table).
    strategy:         overwrite_window (default with partition_by: the run replaces its days) |
                      replace (default without: the run's result is the table) | append (the
                      result's rows are added, nothing replaced; a replayed run adds nothing) | merge (SCD1
                      upsert: the result holds changes, matched on unique_key; unpartitioned
                      models). With merge:
      unique_key:           a column or a list of columns, one row per key in the result;
      merge_update_columns: the columns a matched row updates (default: every column);
      merge_delete_column:  a BOOLEAN column: true removes the key (the column is not stored).
                      | scd2 (a history: every version of a row, unpartitioned models). With scd2:
      unique_key:           as for merge; the result holds one row per key and updated_at;
      updated_at:           the DATE or TIMESTAMP column that orders a key's versions. The table
                            adds valid_from, valid_to (NULL while current) and is_current; a
                            changed row closes its previous version; a replay changes nothing.
                      A merge or scd2 commits only onto the head it read; its rejected rows join
                      those already in `<table>__rejected`.
  A `_reject_reason` column, if the model has one, splits the result: rows with a reason go to
  `<table>__rejected` (same window), the rest to the table, and counts per reason are recorded.
  Rows whose partition value is NULL are rejected too (`missing_partition_value`), filed under
  their `_landing_date`. `--full-refresh` rebuilds the table from this run's result alone.
  The rules are checked when the Dagster definitions load (ratatouille_assets/project/models.py).
-#}
{% materialization iceberg, adapter='duckdb' %}
  {%- set partition_by = config.get('partition_by') -%}
  {%- set staging = api.Relation.create(
        database=this.database, schema=this.schema,
        identifier=this.identifier ~ '__dbt_staging', type='view') -%}

  {{ run_hooks(pre_hooks) }}

  {% call statement('main') -%}
    create schema if not exists {{ this.database }}.{{ this.schema }};
    create or replace view {{ staging }} as (
      {{ sql }}
    )
  {%- endcall %}
  {% do adapter.commit() %}

  {%- set options = {
      'source_relation': staging.render(),
      'namespace': this.schema,
      'table': this.identifier,
      'partition_by': partition_by,
      'partition_granularity': config.get('partition_granularity') or var('partition_granularity', 'day'),
      'min_date': (var('min_date') | string) if partition_by else none,
      'max_date': (var('max_date') | string) if partition_by else none,
      'run_id': var('dagster_run_id', invocation_id),
      'append_key': var('dagster_root_run_id', var('dagster_run_id', invocation_id)),
      'partition_key': var('partition_key', ''),
      'full_refresh': should_full_refresh(),
      'on_schema_change': config.get('on_schema_change'),
      'write_audit_publish': config.get('write_audit_publish', true),
      'strategy': config.get('strategy'),
      'unique_key': config.get('unique_key'),
      'merge_update_columns': config.get('merge_update_columns'),
      'merge_delete_column': config.get('merge_delete_column'),
      'updated_at': config.get('updated_at'),
      'model_path': model.original_file_path,
  } -%}
  {% do adapter.store_relation('ratatouille', this, [], none, 'iceberg', options) %}

  {% call statement('drop_staging') -%}
    drop view if exists {{ staging }}
  {%- endcall %}

  {{ run_hooks(post_hooks) }}
  {{ return({'relations': [this.incorporate(type='view')]}) }}
{% endmaterialization %}
