-- The same event can arrive in two deliveries (a late file re-sent); it counts once,
-- as last delivered. Only ids that occur more than once are deduplicated (see
-- subscriptions.sql: a window over every row sorts the whole table).
WITH repeated AS (
    SELECT trim(event_id) AS event_id
    FROM raw.events
    GROUP BY ALL
    HAVING count(*) > 1
),

latest AS (
    SELECT e.*
    FROM raw.events AS e
    ANTI JOIN repeated AS r ON r.event_id IS NOT DISTINCT FROM trim(e.event_id)
    UNION ALL
    SELECT e.*
    FROM raw.events AS e
    SEMI JOIN repeated AS r ON r.event_id IS NOT DISTINCT FROM trim(e.event_id)
    QUALIFY row_number() OVER (PARTITION BY trim(e.event_id) ORDER BY e.delivery_month DESC) = 1
)

SELECT
    trim(event_id) AS event_id,
    trim(customer_id) AS customer_id,
    event_time,
    lower(trim(event_type)) AS event_type,
    value,
    delivery_month
FROM latest
