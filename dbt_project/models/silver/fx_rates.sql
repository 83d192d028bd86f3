{{ config(partition_by='rate_date') }}

with

bronze as (
    select * from {{ source('bronze', 'fx_rates') }}
    where {{ landing_days_for_window('fx_rates') }}
      and {{ in_window('rate_date') }}
),

latest as (
    select
        rate_date,
        upper(trim(currency)) as currency,
        usd_per_unit,
        _landing_date,
        row_number() over (
            partition by rate_date, upper(trim(currency))
            order by _landing_date desc, _source_file desc
        ) as _version,
    from bronze
),

final as (
    select
        * exclude (_version),
        case
            when currency is null then 'missing_key'
            when usd_per_unit is null or usd_per_unit <= 0 then 'invalid_rate'
        end as _reject_reason,
    from latest
    where _version = 1
)

select * from final
