{#- Current state of every customer (SCD1): the latest record per customer_id wins, merged into
    the table on customer_id (a customer the landing files no longer hold stays)
    (sources.yml: primary_key customer_id, latest_by updated_at). -#}
{{ config(strategy='merge', unique_key='customer_id') }}

with

bronze as (
    select * from {{ source('bronze', 'customers') }}
),

typed as (
    select
        customer_id,
        nullif(lower(trim(email)), '') as email,
        nullif(trim(full_name), '') as full_name,
        coalesce(nullif(upper(trim(country)), ''), 'UNKNOWN') as country,
        signup_date,
        updated_at,
        _landing_date,
        _source_file,
    from bronze
),

latest as (
    {{ latest_by_key('typed', 'customers') }}
),

final as (
    select
        *,
        case when customer_id is null then 'missing_key' end as _reject_reason,
    from latest
)

select * from final
