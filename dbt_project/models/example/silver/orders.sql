{{ config(partition_by='order_date') }}

{#- One row per order, the latest version wins (sources.yml: primary_key order_id, latest_by
    updated_at). Orders of a day may land a day late (late_arrival_days: 1). -#}
with

bronze as (
    select * from {{ source('bronze', 'orders') }}
    where {{ source_window('orders') }}
),

typed as (
    select
        nullif(trim(order_id), '') as order_id,
        customer_id,
        order_ts,
        cast(order_ts as date) as order_date,
        coalesce(lower(trim(status)), 'placed') as status,
        upper(trim(currency)) as currency,
        coalesce(nullif(upper(trim(ship_country)), ''), 'UNKNOWN') as ship_country,
        coalesce(updated_at, order_ts) as updated_at,
        _landing_date,
        _source_file,
    from bronze
),

latest as (
    {{ latest_by_key('typed', 'orders') }}
),

final as (
    select
        *,
        case
            when order_id is null then 'missing_key'
            when customer_id is null then 'missing_customer_id'
            when currency is null or currency not in ({{ accepted_currencies() }}) then 'unknown_currency'
        end as _reject_reason,
    from latest
)

select * from final
