{#- The example shop's currencies (var accepted_currencies in dbt_project.yml), as a SQL list. -#}
{% macro accepted_currencies() -%}
    {%- for c in var("accepted_currencies") -%}'{{ c }}'{{ ", " if not loop.last }}{%- endfor -%}
{%- endmacro %}
