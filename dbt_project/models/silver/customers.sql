{#- Current state of every customer (SCD1): the latest record per customer_id wins. -#}
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
    select
        *,
        row_number() over (
            partition by customer_id
            order by updated_at desc nulls last, _landing_date desc, _source_file desc
        ) as _version,
    from typed
),

final as (
    select
        * exclude (_version),
        case when customer_id is null then 'missing_key' end as _reject_reason,
    from latest
    where _version = 1 or customer_id is null
)

select * from final
