{#- The layer is the schema: a model's `config(schema=...)` (or `+schema` in dbt_project.yml), else
    the first folder of its path named after a layer (models/silver/x.sql, models/example/gold/y.sql),
    with no target prefix. Anything else lands in the target schema, which the Dagster definitions
    refuse with a message naming the model (ratatouille_assets/project/models.py).
    `layers` mirrors MODEL_LAYERS in ratatouille_assets/layers.py (a test keeps them equal); the
    Dagster translator mirrors the rule: asset key = [schema, alias]. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set layers = ['silver', 'gold'] -%}
    {%- set ns = namespace(schema=custom_schema_name) -%}
    {%- if ns.schema is none and node is not none -%}
        {%- for folder in node.fqn[1:-1] -%}
            {%- if ns.schema is none and folder in layers -%}
                {%- set ns.schema = folder -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ (ns.schema or target.schema) | trim }}
{%- endmacro %}
