-- A customer record can be delivered again to correct it; the latest delivery wins.
SELECT
    trim(customer_id) AS customer_id,
    signup_date,
    trim(gender) AS gender,
    senior_citizen,
    partner,
    dependents,
    delivery_month
FROM raw.customers
QUALIFY row_number() OVER (PARTITION BY trim(customer_id) ORDER BY delivery_month DESC) = 1
