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
