{#- The layer is the schema: silver models land in `silver`, gold in `gold` (no target prefix).
    The Dagster translator mirrors this: asset key = [schema, alias]. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
