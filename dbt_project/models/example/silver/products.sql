{#- Current state of every product (SCD1): the latest record per product_id wins
    (sources.yml: primary_key product_id, latest_by updated_at). -#}
{{ config(strategy='merge', unique_key='product_id') }}

with

bronze as (
    select * from {{ source('bronze', 'products') }}
),

typed as (
    select
        product_id,
        nullif(trim(name), '') as name,
        coalesce(nullif(lower(trim(category)), ''), 'uncategorized') as category,
        list_price,
        updated_at,
        _landing_date,
        _source_file,
    from bronze
),

latest as (
    {{ latest_by_key('typed', 'products') }}
),

final as (
    select
        *,
        case
            when product_id is null then 'missing_key'
            when list_price is null or list_price < 0 then 'invalid_price'
        end as _reject_reason,
    from latest
)

select * from final
