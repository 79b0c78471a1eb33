-- A re-delivered snapshot replaces the earlier one for the same customer and month.
-- Only keys that occur more than once are deduplicated: a window over every row would
-- sort the whole table (and scramble its order, which compression and the features'
-- month filters pay for) to drop a few re-deliveries. `repeated` is small, so DuckDB
-- materializing it (it is read twice) costs nothing. Keys compare with IS NOT DISTINCT
-- FROM so that NULL keys are one group, as in a window's PARTITION BY.
WITH repeated AS (
    SELECT trim(customer_id) AS customer_id, date_trunc('month', snapshot_month) AS snapshot_month
    FROM raw.subscriptions
    GROUP BY ALL
    HAVING count(*) > 1
),

latest AS (
    SELECT s.*
    FROM raw.subscriptions AS s
    ANTI JOIN repeated AS r
      ON r.customer_id IS NOT DISTINCT FROM trim(s.customer_id) AND r.snapshot_month IS NOT DISTINCT FROM date_trunc('month', s.snapshot_month)
    UNION ALL
    SELECT s.*
    FROM raw.subscriptions AS s
    SEMI JOIN repeated AS r
      ON r.customer_id IS NOT DISTINCT FROM trim(s.customer_id) AND r.snapshot_month IS NOT DISTINCT FROM date_trunc('month', s.snapshot_month)
    QUALIFY row_number() OVER (
        PARTITION BY trim(s.customer_id), date_trunc('month', s.snapshot_month)
        ORDER BY s.delivery_month DESC
    ) = 1
)

SELECT
    trim(customer_id) AS customer_id,
    CAST(date_trunc('month', snapshot_month) AS DATE) AS snapshot_month,
    trim(contract) AS contract,
    phone_service,
    trim(multiple_lines) AS multiple_lines,
    trim(internet_service) AS internet_service,
    trim(online_security) AS online_security,
    trim(online_backup) AS online_backup,
    trim(device_protection) AS device_protection,
    trim(tech_support) AS tech_support,
    trim(streaming_tv) AS streaming_tv,
    trim(streaming_movies) AS streaming_movies,
    paperless_billing,
    trim(payment_method) AS payment_method,
    monthly_charges,
    total_charges,
    delivery_month
FROM latest
