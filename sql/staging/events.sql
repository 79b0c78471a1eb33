-- The same event can arrive in two deliveries (a late file re-sent); it counts once,
-- as last delivered.
SELECT
    trim(event_id) AS event_id,
    trim(customer_id) AS customer_id,
    event_time,
    lower(trim(event_type)) AS event_type,
    value,
    delivery_month
FROM raw.events
QUALIFY row_number() OVER (PARTITION BY trim(event_id) ORDER BY delivery_month DESC) = 1
