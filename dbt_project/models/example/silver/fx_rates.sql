{{ config(partition_by='rate_date') }}

{#- One rate per day and currency (primary_key rate_date, currency), the latest delivery wins. -#}
with

bronze as (
    select * from {{ source('bronze', 'fx_rates') }}
    where {{ source_window('fx_rates') }}
),

typed as (
    select
        rate_date,
        upper(trim(currency)) as currency,
        usd_per_unit,
        _landing_date,
        _source_file,
    from bronze
),

latest as (
    {{ latest_by_key('typed', 'fx_rates') }}
),

final as (
    select
        * exclude (_source_file),
        case
            when currency is null then 'missing_key'
            when usd_per_unit is null or usd_per_unit <= 0 then 'invalid_rate'
        end as _reject_reason,
    from latest
)

select * from final
