with

products as (
    select * from {{ ref('products') }}
),

final as (
    select
        product_id,
        name,
        category,
        list_price,
        updated_at,
    from products
)

select * from final
