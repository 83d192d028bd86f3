{{ config(partition_by='order_date') }}

{#- One row per order line, priced in the reporting currency at the fx rate of the order date.
    The dimensions are not read here, but this model's checks (dbt relationships tests, Soda
    reference checks) run against them, so they are built first in any run that has both. -#}
-- depends_on: {{ ref('dim_customers') }}
-- depends_on: {{ ref('dim_products') }}
with

lines as (
    select * from {{ ref('order_items') }}
    where {{ in_window('order_date') }}
),

orders as (
    select * from {{ ref('orders') }}
    where {{ in_window('order_date') }}
),

fx as (
    select * from {{ ref('fx_rates') }}
    where {{ in_window('rate_date') }}
),

reporting_fx as (
    select * from fx
    where currency = '{{ var("reporting_currency") }}'
),

final as (
    select
        lines.order_id,
        lines.line_no,
        orders.order_date,
        orders.order_ts,
        orders.customer_id,
        lines.product_id,
        orders.ship_country,
        orders.status,
        orders.currency,
        lines.quantity,
        lines.unit_price,
        cast(lines.quantity * lines.unit_price as decimal(18, 2)) as line_amount,
        cast(fx.usd_per_unit / reporting_fx.usd_per_unit as decimal(18, 8)) as fx_rate,
        cast(round(lines.quantity * lines.unit_price * fx.usd_per_unit / reporting_fx.usd_per_unit, 2) as decimal(18, 2))
            as line_amount_reporting,
        '{{ var("reporting_currency") }}' as reporting_currency,
    from lines
    inner join orders on lines.order_id = orders.order_id
    inner join fx on fx.rate_date = orders.order_date and fx.currency = orders.currency
    inner join reporting_fx on reporting_fx.rate_date = orders.order_date
)

select * from final
