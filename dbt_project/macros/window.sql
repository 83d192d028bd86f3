{#- The partition window of this invocation (inclusive days), from --vars min_date/max_date. -#}
{% macro window_start() -%}
    date '{{ var("min_date") | string }}'
{%- endmacro %}

{% macro window_end() -%}
    date '{{ var("max_date") | string }}'
{%- endmacro %}

{% macro in_window(expression) -%}
    ({{ expression }} between {{ window_start() }} and {{ window_end() }})
{%- endmacro %}

{#- Landing days of a bronze source that can hold rows of the window: the window itself plus the
    source's `meta.late_arrival_days` (a record may arrive up to that many days after its day). -#}
{% macro landing_days_for_window(table_name) -%}
    {%- set ns = namespace(days=0) -%}
    {%- if execute -%}
        {%- for node in graph.sources.values() -%}
            {%- if node.source_name == 'bronze' and node.name == table_name -%}
                {%- set ns.days = node.meta.get('late_arrival_days', 0) | int -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    (_landing_date between {{ window_start() }} and {{ window_end() }} + interval {{ ns.days }} day)
{%- endmacro %}

{% macro accepted_currencies() -%}
    {%- for c in var("accepted_currencies") -%}'{{ c }}'{{ ", " if not loop.last }}{%- endfor -%}
{%- endmacro %}
