{{ config(partition_by='order_date') }}

{#- One row per order line (primary_key order_id, line_no); lines arrive with their order, so they
    share its lateness. -#}
with

bronze as (
    select * from {{ source('bronze', 'order_items') }}
    where {{ source_window('order_items') }}
),

typed as (
    select
        nullif(trim(order_id), '') as order_id,
        line_no,
        product_id,
        quantity,
        unit_price,
        order_ts,
        cast(order_ts as date) as order_date,
        _landing_date,
        _source_file,
    from bronze
),

latest as (
    {{ latest_by_key('typed', 'order_items') }}
),

final as (
    select
        *,
        case
            when order_id is null or line_no is null then 'missing_key'
            when product_id is null then 'missing_product_id'
            when quantity is null or quantity <= 0 then 'non_positive_quantity'
            when unit_price is null or unit_price < 0 then 'invalid_unit_price'
        end as _reject_reason,
    from latest
)

select * from final
