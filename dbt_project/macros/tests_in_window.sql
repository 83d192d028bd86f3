{#-
  dbt tests of a daily model check the days this run wrote, not the whole history.

  dbt wraps the model of every data test in `get_where_subquery`; this project's version adds the
  run's --vars window on the model's `partition_by` column (and keeps a test's own `where:`). Like
  the Soda checks, a test then costs the size of the window, not of the table: without it a
  `unique` test on a year of orders scans the year on every daily run. Unpartitioned models
  (dimensions) are tested whole.
-#}
{% macro get_where_subquery(relation) -%}
    {%- set filters = [] -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- do filters.append('(' ~ where ~ ')') -%}
    {%- endif -%}
    {%- set column = partition_column_of(relation) -%}
    {%- if column -%}
        {%- do filters.append(in_window(column)) -%}
    {%- endif -%}
    {%- if filters -%}
        (select * from {{ relation }} where {{ filters | join(' and ') }}) dbt_subquery
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}

{#- The `partition_by` of the model behind `relation`, if it is a daily model of this project. -#}
{% macro partition_column_of(relation) -%}
    {%- set ns = namespace(column=none) -%}
    {%- if execute and relation is not none and relation.identifier is defined -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.schema == relation.schema
                  and (node.alias or node.name) == relation.identifier -%}
                {%- set ns.column = node.config.get('partition_by') -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- return(ns.column) -}}
{%- endmacro %}
