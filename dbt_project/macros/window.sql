{#-
  The partition window of this invocation (inclusive days, from --vars min_date/max_date) and the
  macros that read a bronze source for it. What a source is (its primary key, event time, late
  arrivals) comes from sources.yml, through the generated dbt sources' `meta`
  (models/_sources.generated.yml): never repeated in a model.
-#}

{% macro window_start() -%}
    date '{{ var("min_date") | string }}'
{%- endmacro %}

{% macro window_end() -%}
    date '{{ var("max_date") | string }}'
{%- endmacro %}

{#- The day after the window: a TIMESTAMP is in the window when it is before that day's midnight. -#}
{% macro window_after() -%}
    {%- set last = modules.datetime.date.fromisoformat(var("max_date") | string) -%}
    date '{{ (last + modules.datetime.timedelta(days=1)).isoformat() }}'
{%- endmacro %}

{#- Whether `expression` (a DATE or a TIMESTAMP) falls on a day of the window. -#}
{% macro in_window(expression) -%}
    ({{ expression }} >= {{ window_start() }} and {{ expression }} < {{ window_after() }})
{%- endmacro %}

{#- The `meta` of bronze source `table_name` (generated from sources.yml). -#}
{% macro bronze_meta(table_name) -%}
    {%- set ns = namespace(meta=none) -%}
    {%- if execute -%}
        {%- for node in graph.sources.values() -%}
            {%- if node.source_name == 'bronze' and node.name == table_name -%}
                {%- set ns.meta = node.meta -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if ns.meta is none -%}
            {{ exceptions.raise_compiler_error("no source '" ~ table_name ~ "' in sources.yml (the bronze sources are declared there)") }}
        {%- endif -%}
    {%- endif -%}
    {{- return(ns.meta or {}) -}}
{%- endmacro %}

{#- Landing days of a bronze source that can hold rows of the window: the window itself plus the
    source's `late_arrival_days` (a record may land up to that many days after its day). -#}
{% macro landing_days_for_window(table_name) -%}
    {%- set days = bronze_meta(table_name).get('late_arrival_days', 0) | int -%}
    (_landing_date between {{ window_start() }} and {{ window_end() }} + interval {{ days }} day)
{%- endmacro %}

{#-
  The rows of bronze source `table_name` that belong to the window: those whose `event_time`
  (sources.yml) is on a day of the window, read from the landing days that can hold them (late
  arrivals included). A row with no event time belongs to its landing day, so it reaches the model
  (to be rejected there, or by the write path as `missing_partition_value`) instead of vanishing.
  A source without event_time: its landing day is its day. A reference source: every row.
-#}
{% macro source_window(table_name) -%}
    {%- set meta = bronze_meta(table_name) -%}
    {%- if execute and not meta.get('partitioned', true) -%}
        (true)
    {%- elif meta.get('event_time') -%}
        ({{ landing_days_for_window(table_name) }}
         and ({{ in_window(meta['event_time']) }}
              or ({{ meta['event_time'] }} is null and {{ in_window('_landing_date') }})))
    {%- else -%}
        {{ in_window('_landing_date') }}
    {%- endif -%}
{%- endmacro %}

{#-
  One row per primary key (sources.yml `primary_key`) of `relation`, the newest winning: the
  highest `latest_by` (NULLs lose), then the later landing day, then the later file name. Rows with
  a NULL key component are all kept, so the model can reject them ('missing_key'). `relation` is a
  CTE or relation with the source's key columns (already cleaned, if the model cleans them).

    latest as (
        {{ latest_by_key('typed', 'orders') }}
    ),
-#}
{% macro latest_by_key(relation, table_name) -%}
    {%- set meta = bronze_meta(table_name) -%}
    {%- set keys = meta.get('primary_key') or [] -%}
    {%- if execute and not keys -%}
        {{ exceptions.raise_compiler_error("latest_by_key('" ~ relation ~ "', '" ~ table_name ~ "'): source '" ~ table_name ~ "' has no primary_key in sources.yml") }}
    {%- endif -%}
    {%- set order = [] -%}
    {%- if meta.get('latest_by') -%}{%- do order.append(meta['latest_by'] ~ ' desc nulls last') -%}{%- endif -%}
    {%- if meta.get('partitioned', true) -%}{%- do order.append('_landing_date desc') -%}{%- endif -%}
    {%- do order.append('_source_file desc') -%}
    select * from {{ relation }}
    qualify row_number() over (partition by {{ keys | join(', ') }} order by {{ order | join(', ') }}) = 1
        {%- for key in keys %}
        or {{ key }} is null
        {%- endfor %}
{%- endmacro %}
