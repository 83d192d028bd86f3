{{ config(partition_by='order_date', partition_granularity='month') }}

{#- Revenue, orders and average order value per day and shipping country (cancelled orders excluded).
    A handful of rows a day: monthly Iceberg partitions (a run still replaces exactly its days), so
    a dashboard over years opens a file a month, not one a day. -#}
with

lines as (
    select * from {{ ref('fct_order_lines') }}
    where {{ in_window('order_date') }}
      and status <> 'cancelled'
),

final as (
    select
        order_date,
        ship_country as country,
        reporting_currency,
        count(distinct order_id) as orders,
        count(*) as order_lines,
        sum(quantity) as units,
        cast(sum(line_amount_reporting) as decimal(18, 2)) as revenue,
        cast(round(sum(line_amount_reporting) / count(distinct order_id), 2) as decimal(18, 2)) as avg_order_value,
    from lines
    group by order_date, ship_country, reporting_currency
)

select * from final
