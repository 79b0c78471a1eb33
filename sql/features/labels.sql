-- A month counts as observed once the warehouse holds any raw row dated in it or later;
-- before that, "no cancellation in M+1" is not yet evidence of staying.
WITH observed AS (
    SELECT max(observed_month) AS last_observed_month
    FROM (
        SELECT max(CAST(date_trunc('month', snapshot_month) AS DATE)) AS observed_month FROM raw.subscriptions
        UNION ALL
        SELECT max(CAST(date_trunc('month', event_time) AS DATE)) FROM raw.events
        UNION ALL
        SELECT max(CAST(date_trunc('month', cancel_date) AS DATE)) FROM raw.cancellations
    ) AS months
),

next_month_cancellations AS (
    SELECT DISTINCT customer_id, CAST(date_trunc('month', cancel_date) - INTERVAL 1 MONTH AS DATE) AS snapshot_month
    FROM staging.cancellations
)

SELECT
    s.customer_id,
    s.snapshot_month,
    CASE
        WHEN o.last_observed_month IS NULL
          OR o.last_observed_month < CAST(s.snapshot_month + INTERVAL 1 MONTH AS DATE) THEN NULL
        WHEN c.customer_id IS NOT NULL THEN 1
        ELSE 0
    END AS churned
FROM staging.subscriptions AS s
CROSS JOIN observed AS o
LEFT JOIN next_month_cancellations AS c
  ON c.customer_id = s.customer_id AND c.snapshot_month = s.snapshot_month
