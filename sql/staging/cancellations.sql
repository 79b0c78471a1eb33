-- One row per customer and cancel date, not per customer: a customer who comes back and
-- leaves again has churned twice, and the label needs both.
SELECT
    trim(customer_id) AS customer_id,
    cancel_date,
    trim(reason) AS reason,
    delivery_month
FROM raw.cancellations
QUALIFY row_number() OVER (
    PARTITION BY trim(customer_id), cancel_date ORDER BY delivery_month DESC
) = 1
