-- A customer record can be delivered again to correct it; the latest delivery wins.
-- Only ids that occur more than once are deduplicated (see subscriptions.sql).
WITH repeated AS (
    SELECT trim(customer_id) AS customer_id
    FROM raw.customers
    GROUP BY ALL
    HAVING count(*) > 1
),

latest AS (
    SELECT c.*
    FROM raw.customers AS c
    ANTI JOIN repeated AS r ON r.customer_id IS NOT DISTINCT FROM trim(c.customer_id)
    UNION ALL
    SELECT c.*
    FROM raw.customers AS c
    SEMI JOIN repeated AS r ON r.customer_id IS NOT DISTINCT FROM trim(c.customer_id)
    QUALIFY row_number() OVER (PARTITION BY trim(c.customer_id) ORDER BY c.delivery_month DESC) = 1
)

SELECT
    trim(customer_id) AS customer_id,
    signup_date,
    trim(gender) AS gender,
    senior_citizen,
    partner,
    dependents,
    delivery_month
FROM latest
