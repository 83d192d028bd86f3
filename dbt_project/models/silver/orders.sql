{{ config(partition_by='order_date') }}

{#- One row per order, the latest version wins. Orders of a day may land a day late. -#}
with

bronze as (
    select * from {{ source('bronze', 'orders') }}
    where {{ landing_days_for_window('orders') }}
      and {{ in_window('cast(order_ts as date)') }}
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
    select
        *,
        row_number() over (
            partition by order_id
            order by updated_at desc, _landing_date desc, _source_file desc
        ) as _version,
    from typed
),

final as (
    select
        * exclude (_version),
        case
            when order_id is null then 'missing_key'
            when customer_id is null then 'missing_customer_id'
            when currency is null or currency not in ({{ accepted_currencies() }}) then 'unknown_currency'
        end as _reject_reason,
    from latest
    where _version = 1 or order_id is null
)

select * from final
