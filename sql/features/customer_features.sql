-- Point in time: a row for snapshot month M reads nothing dated on or after the first
-- day of M+1 (month_end). Every lookback is bounded (3 snapshots, 365 days of events),
-- so a month computes the same whether it runs alone or inside a multi-month backfill.
WITH snapshots AS (
    SELECT
        *,
        CAST(snapshot_month + INTERVAL 1 MONTH AS TIMESTAMP) AS month_end
    FROM staging.subscriptions
    WHERE snapshot_month >= $partition_start
      AND snapshot_month < $partition_end
),

earlier_snapshots AS (
    SELECT customer_id, snapshot_month, contract, internet_service, monthly_charges, total_charges
    FROM staging.subscriptions
    WHERE snapshot_month >= CAST($partition_start - INTERVAL 3 MONTH AS DATE)
      AND snapshot_month < $partition_end
),

-- Days-since features are capped at 365, so older events can never change a row.
lookback_events AS (
    SELECT customer_id, event_type, event_time, value
    FROM staging.events
    WHERE event_time >= CAST($partition_start AS TIMESTAMP) - INTERVAL 365 DAY
      AND event_time < CAST($partition_end AS TIMESTAMP)
),

-- An event falls in the trailing 90-day window of at most four snapshot months: its own
-- month and the three after it. Fanning each event out to those months keeps the window
-- join an equi-join instead of a range join over every pair of events and snapshots.
event_in_window_months AS (
    SELECT
        e.customer_id,
        e.event_type,
        e.event_time,
        e.value,
        CAST(date_trunc('month', e.event_time) + to_months(o.months_after) AS DATE) AS snapshot_month
    FROM lookback_events AS e
    CROSS JOIN range(4) AS o(months_after)
    WHERE e.event_time >= CAST($partition_start AS TIMESTAMP) - INTERVAL 92 DAY
      AND e.event_type IN ('support_call', 'late_payment', 'outage')
),

-- Sums of DOUBLEs are rounded to 6 decimals: DuckDB adds them in a thread-dependent order,
-- and the last bits would differ between two builds of the same data (the inputs have at
-- most 2 decimals, so nothing of value is lost), which would change the training data's
-- hash and every model version.
trailing_windows AS (
    SELECT
        s.customer_id,
        s.snapshot_month,
        count(*) FILTER (WHERE e.event_type = 'support_call' AND e.event_time >= s.month_end - INTERVAL 30 DAY) AS support_calls_30d,
        count(*) FILTER (WHERE e.event_type = 'support_call') AS support_calls_90d,
        round(sum(e.value) FILTER (WHERE e.event_type = 'support_call'), 6) AS support_minutes_90d,
        count(*) FILTER (WHERE e.event_type = 'late_payment' AND e.event_time >= s.month_end - INTERVAL 30 DAY) AS late_payments_30d,
        count(*) FILTER (WHERE e.event_type = 'late_payment') AS late_payments_90d,
        round(sum(e.value) FILTER (WHERE e.event_type = 'late_payment'), 6) AS overdue_amount_90d,
        count(*) FILTER (WHERE e.event_type = 'outage' AND e.event_time >= s.month_end - INTERVAL 30 DAY) AS outages_30d,
        count(*) FILTER (WHERE e.event_type = 'outage') AS outages_90d,
        round(sum(e.value) FILTER (WHERE e.event_type = 'outage'), 6) AS outage_hours_90d
    FROM snapshots AS s
    JOIN event_in_window_months AS e
      ON e.customer_id = s.customer_id
     AND e.snapshot_month = s.snapshot_month
     AND e.event_time >= s.month_end - INTERVAL 90 DAY
     AND e.event_time < s.month_end
    GROUP BY s.customer_id, s.snapshot_month
),

monthly_events AS (
    SELECT
        customer_id,
        CAST(date_trunc('month', event_time) AS DATE) AS month,
        count(*) FILTER (WHERE event_type = 'plan_change') AS plan_changes,
        coalesce(round(sum(value) FILTER (WHERE event_type = 'usage'), 6), 0) AS usage_gb,
        max(event_time) FILTER (WHERE event_type = 'support_call') AS last_support_call_at,
        max(event_time) FILTER (WHERE event_type = 'late_payment') AS last_late_payment_at,
        max(event_time) FILTER (WHERE event_type = 'outage') AS last_outage_at
    FROM lookback_events
    GROUP BY customer_id, CAST(date_trunc('month', event_time) AS DATE)
),

-- Every month a customer has events or a snapshot, so calendar-month windows can run
-- over it (months without events contribute nothing).
event_timeline AS (
    SELECT
        customer_id,
        month,
        sum(plan_changes) AS plan_changes,
        round(sum(usage_gb), 6) AS usage_gb,
        max(last_support_call_at) AS last_support_call_at,
        max(last_late_payment_at) AS last_late_payment_at,
        max(last_outage_at) AS last_outage_at
    FROM (
        SELECT customer_id, month, plan_changes, usage_gb,
               last_support_call_at, last_late_payment_at, last_outage_at
        FROM monthly_events
        UNION ALL
        SELECT customer_id, snapshot_month, 0, 0, NULL, NULL, NULL
        FROM snapshots
    ) AS months
    GROUP BY customer_id, month
),

-- The timeline has one row per customer and month, so "the previous row" is the previous
-- month only when its month says so; months missing from it had no events.
event_history AS (
    SELECT
        customer_id,
        month AS snapshot_month,
        plan_changes AS plan_changes_1m,
        plan_changes
            + CASE WHEN lag(month, 1) OVER by_month >= CAST(month - INTERVAL 2 MONTH AS DATE)
                   THEN lag(plan_changes, 1) OVER by_month ELSE 0 END
            + CASE WHEN lag(month, 2) OVER by_month >= CAST(month - INTERVAL 2 MONTH AS DATE)
                   THEN lag(plan_changes, 2) OVER by_month ELSE 0 END AS plan_changes_3m,
        usage_gb AS usage_gb_month,
        CASE WHEN lag(month, 1) OVER by_month = CAST(month - INTERVAL 1 MONTH AS DATE)
             THEN lag(usage_gb, 1) OVER by_month ELSE 0 END AS usage_gb_prev_month,
        (usage_gb
            + CASE WHEN lag(month, 1) OVER by_month >= CAST(month - INTERVAL 2 MONTH AS DATE)
                   THEN lag(usage_gb, 1) OVER by_month ELSE 0 END
            + CASE WHEN lag(month, 2) OVER by_month >= CAST(month - INTERVAL 2 MONTH AS DATE)
                   THEN lag(usage_gb, 2) OVER by_month ELSE 0 END) / 3 AS usage_gb_3m_avg,
        max(last_support_call_at) OVER running AS last_support_call_at,
        max(last_late_payment_at) OVER running AS last_late_payment_at,
        max(last_outage_at) OVER running AS last_outage_at
    FROM event_timeline
    WINDOW
        by_month AS (PARTITION BY customer_id ORDER BY month),
        running AS (PARTITION BY customer_id ORDER BY month ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)

SELECT
    s.customer_id,
    s.snapshot_month,
    c.gender,
    c.senior_citizen,
    c.partner,
    c.dependents,
    CAST(date_diff('month', date_trunc('month', c.signup_date), s.snapshot_month) AS INTEGER) AS tenure_months,
    s.contract,
    s.phone_service,
    s.multiple_lines,
    s.internet_service,
    s.online_security,
    s.online_backup,
    s.device_protection,
    s.tech_support,
    s.streaming_tv,
    s.streaming_movies,
    s.paperless_billing,
    s.payment_method,
    CAST(
        CAST(coalesce(s.phone_service, false) AS INTEGER)
        + CAST(s.multiple_lines = 'Yes' AS INTEGER)
        + CAST(s.internet_service <> 'No' AS INTEGER)
        + CAST(s.online_security = 'Yes' AS INTEGER)
        + CAST(s.online_backup = 'Yes' AS INTEGER)
        + CAST(s.device_protection = 'Yes' AS INTEGER)
        + CAST(s.tech_support = 'Yes' AS INTEGER)
        + CAST(s.streaming_tv = 'Yes' AS INTEGER)
        + CAST(s.streaming_movies = 'Yes' AS INTEGER)
    AS INTEGER) AS service_count,
    s.monthly_charges,
    -- Unbilled (NULL) totals: last month's total plus this month's charge when known,
    -- otherwise nothing billed yet (a brand-new customer, as in the Telco file).
    coalesce(s.total_charges, p1.total_charges + s.monthly_charges, 0.0) AS total_charges,
    s.total_charges IS NULL AS total_charges_imputed,
    s.monthly_charges - p1.monthly_charges AS charge_change_1m,
    s.monthly_charges / nullif(p1.monthly_charges, 0) AS charge_ratio_1m,
    s.monthly_charges - p3.monthly_charges AS charge_change_3m,
    s.monthly_charges / nullif(p3.monthly_charges, 0) AS charge_ratio_3m,
    coalesce(s.monthly_charges > p1.monthly_charges, false) AS price_rise_1m,
    coalesce(s.monthly_charges > p1.monthly_charges, false)
        OR coalesce(p1.monthly_charges > p2.monthly_charges, false)
        OR coalesce(p2.monthly_charges > p3.monthly_charges, false) AS price_rise_3m,
    CAST(h.plan_changes_1m AS INTEGER) AS plan_changes_1m,
    CAST(h.plan_changes_3m AS INTEGER) AS plan_changes_3m,
    h.plan_changes_1m > 0
        OR coalesce(s.contract <> p1.contract OR s.internet_service <> p1.internet_service, false)
        AS plan_change_1m,
    h.plan_changes_3m > 0
        OR coalesce(s.contract <> p1.contract OR s.internet_service <> p1.internet_service, false)
        OR coalesce(p1.contract <> p2.contract OR p1.internet_service <> p2.internet_service, false)
        OR coalesce(p2.contract <> p3.contract OR p2.internet_service <> p3.internet_service, false)
        AS plan_change_3m,
    CAST(coalesce(w.support_calls_30d, 0) AS INTEGER) AS support_calls_30d,
    CAST(coalesce(w.support_calls_90d, 0) AS INTEGER) AS support_calls_90d,
    coalesce(w.support_minutes_90d, 0.0) AS support_minutes_90d,
    CAST(coalesce(w.late_payments_30d, 0) AS INTEGER) AS late_payments_30d,
    CAST(coalesce(w.late_payments_90d, 0) AS INTEGER) AS late_payments_90d,
    coalesce(w.overdue_amount_90d, 0.0) AS overdue_amount_90d,
    CAST(coalesce(w.outages_30d, 0) AS INTEGER) AS outages_30d,
    CAST(coalesce(w.outages_90d, 0) AS INTEGER) AS outages_90d,
    coalesce(w.outage_hours_90d, 0.0) AS outage_hours_90d,
    CAST(least(coalesce(date_diff('day', CAST(h.last_support_call_at AS DATE), CAST(s.month_end AS DATE) - 1), 365), 365) AS INTEGER) AS days_since_support_call,
    CAST(least(coalesce(date_diff('day', CAST(h.last_late_payment_at AS DATE), CAST(s.month_end AS DATE) - 1), 365), 365) AS INTEGER) AS days_since_late_payment,
    CAST(least(coalesce(date_diff('day', CAST(h.last_outage_at AS DATE), CAST(s.month_end AS DATE) - 1), 365), 365) AS INTEGER) AS days_since_outage,
    h.usage_gb_month,
    h.usage_gb_prev_month,
    h.usage_gb_month - h.usage_gb_prev_month AS usage_gb_change_1m,
    h.usage_gb_3m_avg
FROM snapshots AS s
LEFT JOIN staging.customers AS c
  ON c.customer_id = s.customer_id
LEFT JOIN earlier_snapshots AS p1
  ON p1.customer_id = s.customer_id AND p1.snapshot_month = CAST(s.snapshot_month - INTERVAL 1 MONTH AS DATE)
LEFT JOIN earlier_snapshots AS p2
  ON p2.customer_id = s.customer_id AND p2.snapshot_month = CAST(s.snapshot_month - INTERVAL 2 MONTH AS DATE)
LEFT JOIN earlier_snapshots AS p3
  ON p3.customer_id = s.customer_id AND p3.snapshot_month = CAST(s.snapshot_month - INTERVAL 3 MONTH AS DATE)
LEFT JOIN trailing_windows AS w
  ON w.customer_id = s.customer_id AND w.snapshot_month = s.snapshot_month
LEFT JOIN event_history AS h
  ON h.customer_id = s.customer_id AND h.snapshot_month = s.snapshot_month
