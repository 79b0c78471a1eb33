-- One row per customer and cancel date, not per customer: a customer who comes back and
-- leaves again has churned twice, and the label needs both. Only keys that occur more
-- than once are deduplicated (see subscriptions.sql).
WITH repeated AS (
    SELECT trim(customer_id) AS customer_id, cancel_date
    FROM raw.cancellations
    GROUP BY ALL
    HAVING count(*) > 1
),

latest AS (
    SELECT c.*
    FROM raw.cancellations AS c
    ANTI JOIN repeated AS r ON r.customer_id IS NOT DISTINCT FROM trim(c.customer_id) AND r.cancel_date IS NOT DISTINCT FROM c.cancel_date
    UNION ALL
    SELECT c.*
    FROM raw.cancellations AS c
    SEMI JOIN repeated AS r ON r.customer_id IS NOT DISTINCT FROM trim(c.customer_id) AND r.cancel_date IS NOT DISTINCT FROM c.cancel_date
    QUALIFY row_number() OVER (
        PARTITION BY trim(c.customer_id), c.cancel_date ORDER BY c.delivery_month DESC
    ) = 1
)

SELECT
    trim(customer_id) AS customer_id,
    cancel_date,
    trim(reason) AS reason,
    delivery_month
FROM latest
