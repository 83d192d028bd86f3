{#- Current state of every product (SCD1): the latest record per product_id wins. -#}
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
    select
        *,
        row_number() over (
            partition by product_id
            order by updated_at desc nulls last, _landing_date desc, _source_file desc
        ) as _version,
    from typed
),

final as (
    select
        * exclude (_version),
        case
            when product_id is null then 'missing_key'
            when list_price is null or list_price < 0 then 'invalid_price'
        end as _reject_reason,
    from latest
    where _version = 1 or product_id is null
)

select * from final
