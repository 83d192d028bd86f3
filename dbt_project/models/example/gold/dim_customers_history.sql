{#- Every version of every customer (SCD2): a customer whose record changed gets a new row from
    its updated_at on, and the row before it is closed (valid_to). Built from silver's current
    state, so a version is what a day's load left: two changes of one customer in one day's files
    make one version (the later). -#}
{{ config(strategy='scd2', unique_key='customer_id', updated_at='updated_at') }}

with

customers as (
    select * from {{ ref('customers') }}
),

final as (
    select
        customer_id,
        email,
        full_name,
        country,
        signup_date,
        updated_at,
    from customers
)

select * from final
