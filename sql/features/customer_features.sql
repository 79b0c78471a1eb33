-- Point in time: a row for snapshot month M reads nothing dated on or after the first
-- day of M+1 (month_end). Every lookback is bounded (3 snapshots, 365 days of events),
-- so a month computes the same whether it runs alone or inside a multi-month backfill.
--
-- One pass per thing the layer needs: a group-by over the events (calendar-month and
-- trailing-window aggregates together), one outer join of those with the snapshots, one
-- window over that timeline (previous snapshots and earlier months' events by lag()),
-- and the join with the customers. Every CTE is read once: DuckDB writes a CTE read
-- twice to a temporary result, which here would be millions of rows.
WITH subscriptions AS (
    -- The window's snapshots and the three months before it, which its first months'
    -- 1-3 month comparisons read; only the window's rows are output.
    SELECT *
    FROM staging.subscriptions
    WHERE snapshot_month >= CAST($partition_start - INTERVAL 3 MONTH AS DATE)
      AND snapshot_month < $partition_end
),

-- Every event once in its own month (own_month), for the calendar-month features, and,
-- for the three windowed kinds, again in each of the three months after it: an event
-- falls in the trailing 90-day window of at most four snapshot months (its own and the
-- three after), and fanning it out keeps the window an equi-group instead of a range
-- join over every pair of events and snapshots. Days-since features are capped at 365,
-- so older events can never change a row.
event_months AS (
    SELECT
        customer_id, event_type, event_time, value, true AS own_month,
        CAST(date_trunc('month', event_time) AS DATE) AS month
    FROM staging.events
    WHERE event_time >= CAST($partition_start AS TIMESTAMP) - INTERVAL 365 DAY
      AND event_time < CAST($partition_end AS TIMESTAMP)
    UNION ALL
    SELECT
        e.customer_id, e.event_type, e.event_time, e.value, false AS own_month,
        CAST(date_trunc('month', e.event_time) + to_months(o.months_after) AS DATE) AS month
    FROM staging.events AS e
    CROSS JOIN range(1, 4) AS o(months_after)
    WHERE e.event_time >= CAST($partition_start AS TIMESTAMP) - INTERVAL 92 DAY
      AND e.event_time < CAST($partition_end AS TIMESTAMP)
      AND e.event_type IN ('support_call', 'late_payment', 'outage')
),

-- Sums of DOUBLEs are rounded to 6 decimals: DuckDB adds them in a thread-dependent order,
-- and the last bits would differ between two builds of the same data (the inputs have at
-- most 2 decimals, so nothing of value is lost), which would change the training data's
-- hash and every model version. An event is never after the end of the month it is
-- counted in (it is in its own month or an earlier one), so each trailing window needs
-- only its lower bound (window end = the first day of month + 1, as month_end).
event_features AS (
    SELECT
        customer_id,
        month,
        count(*) FILTER (WHERE own_month AND is_plan_change) AS plan_changes,
        coalesce(round(sum(value) FILTER (WHERE own_month AND is_usage), 6), 0) AS usage_gb,
        max(event_time) FILTER (WHERE own_month AND is_support_call) AS last_support_call_at,
        max(event_time) FILTER (WHERE own_month AND is_late_payment) AS last_late_payment_at,
        max(event_time) FILTER (WHERE own_month AND is_outage) AS last_outage_at,
        count(*) FILTER (WHERE is_support_call AND in_30d) AS support_calls_30d,
        count(*) FILTER (WHERE is_support_call AND in_90d) AS support_calls_90d,
        round(sum(value) FILTER (WHERE is_support_call AND in_90d), 6) AS support_minutes_90d,
        count(*) FILTER (WHERE is_late_payment AND in_30d) AS late_payments_30d,
        count(*) FILTER (WHERE is_late_payment AND in_90d) AS late_payments_90d,
        round(sum(value) FILTER (WHERE is_late_payment AND in_90d), 6) AS overdue_amount_90d,
        count(*) FILTER (WHERE is_outage AND in_30d) AS outages_30d,
        count(*) FILTER (WHERE is_outage AND in_90d) AS outages_90d,
        round(sum(value) FILTER (WHERE is_outage AND in_90d), 6) AS outage_hours_90d
    FROM (
        -- Each row's kind and windows are worked out once here, not once per aggregate.
        SELECT
            customer_id, month, own_month, event_time, value,
            event_type = 'plan_change' AS is_plan_change,
            event_type = 'usage' AS is_usage,
            event_type = 'support_call' AS is_support_call,
            event_type = 'late_payment' AS is_late_payment,
            event_type = 'outage' AS is_outage,
            event_time >= CAST(month + INTERVAL 1 MONTH AS TIMESTAMP) - INTERVAL 30 DAY AS in_30d,
            event_time >= CAST(month + INTERVAL 1 MONTH AS TIMESTAMP) - INTERVAL 90 DAY AS in_90d
        FROM event_months
        WHERE month < $partition_end
    ) AS fanned
    GROUP BY customer_id, month
),

-- One row per customer and month that has a snapshot or events, so calendar-month
-- windows can run over it (months without events contribute nothing, months without a
-- snapshot have NULL snapshot columns, as a missing previous snapshot should).
timeline AS (
    SELECT
        coalesce(s.customer_id, e.customer_id) AS customer_id,
        coalesce(s.snapshot_month, e.month) AS month,
        s.snapshot_month IS NOT NULL AS has_snapshot,
        s.* EXCLUDE (customer_id, snapshot_month),
        coalesce(e.plan_changes, 0) AS plan_changes,
        coalesce(e.usage_gb, 0) AS usage_gb,
        e.* EXCLUDE (customer_id, month, plan_changes, usage_gb)
    FROM subscriptions AS s
    FULL OUTER JOIN event_features AS e
      ON e.customer_id = s.customer_id AND e.month = s.snapshot_month
),

-- The timeline has one row per customer and month, so "the previous row" is the previous
-- month only when its month says so: lag k (k = 1..3) is at month M-k or earlier, and the
-- snapshot of M-k, when there is one, is at one of lags 1..k.
lagged AS (
    SELECT
        *,
        CAST(month + INTERVAL 1 MONTH AS TIMESTAMP) AS month_end,
        lag(month, 1) OVER by_month AS month_1,
        lag(month, 2) OVER by_month AS month_2,
        lag(month, 3) OVER by_month AS month_3,
        lag(monthly_charges, 1) OVER by_month AS monthly_charges_1,
        lag(monthly_charges, 2) OVER by_month AS monthly_charges_2,
        lag(monthly_charges, 3) OVER by_month AS monthly_charges_3,
        lag(contract, 1) OVER by_month AS contract_1,
        lag(contract, 2) OVER by_month AS contract_2,
        lag(contract, 3) OVER by_month AS contract_3,
        lag(internet_service, 1) OVER by_month AS internet_service_1,
        lag(internet_service, 2) OVER by_month AS internet_service_2,
        lag(internet_service, 3) OVER by_month AS internet_service_3,
        lag(total_charges, 1) OVER by_month AS total_charges_1,
        lag(plan_changes, 1) OVER by_month AS plan_changes_prev_1,
        lag(plan_changes, 2) OVER by_month AS plan_changes_prev_2,
        lag(usage_gb, 1) OVER by_month AS usage_gb_prev_1,
        lag(usage_gb, 2) OVER by_month AS usage_gb_prev_2,
        max(last_support_call_at) OVER running AS last_support_call_at_running,
        max(last_late_payment_at) OVER running AS last_late_payment_at_running,
        max(last_outage_at) OVER running AS last_outage_at_running
    FROM timeline
    WINDOW
        by_month AS (PARTITION BY customer_id ORDER BY month),
        running AS (PARTITION BY customer_id ORDER BY month ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),

history AS (
    SELECT
        * EXCLUDE (last_support_call_at, last_late_payment_at, last_outage_at),
        month AS snapshot_month,
        CASE WHEN month_1 = CAST(month - INTERVAL 1 MONTH AS DATE) THEN monthly_charges_1 END AS p1_monthly_charges,
        CASE WHEN month_1 = CAST(month - INTERVAL 2 MONTH AS DATE) THEN monthly_charges_1
             WHEN month_2 = CAST(month - INTERVAL 2 MONTH AS DATE) THEN monthly_charges_2 END AS p2_monthly_charges,
        CASE WHEN month_1 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN monthly_charges_1
             WHEN month_2 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN monthly_charges_2
             WHEN month_3 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN monthly_charges_3 END AS p3_monthly_charges,
        CASE WHEN month_1 = CAST(month - INTERVAL 1 MONTH AS DATE) THEN contract_1 END AS p1_contract,
        CASE WHEN month_1 = CAST(month - INTERVAL 2 MONTH AS DATE) THEN contract_1
             WHEN month_2 = CAST(month - INTERVAL 2 MONTH AS DATE) THEN contract_2 END AS p2_contract,
        CASE WHEN month_1 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN contract_1
             WHEN month_2 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN contract_2
             WHEN month_3 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN contract_3 END AS p3_contract,
        CASE WHEN month_1 = CAST(month - INTERVAL 1 MONTH AS DATE) THEN internet_service_1 END AS p1_internet_service,
        CASE WHEN month_1 = CAST(month - INTERVAL 2 MONTH AS DATE) THEN internet_service_1
             WHEN month_2 = CAST(month - INTERVAL 2 MONTH AS DATE) THEN internet_service_2 END AS p2_internet_service,
        CASE WHEN month_1 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN internet_service_1
             WHEN month_2 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN internet_service_2
             WHEN month_3 = CAST(month - INTERVAL 3 MONTH AS DATE) THEN internet_service_3 END AS p3_internet_service,
        CASE WHEN month_1 = CAST(month - INTERVAL 1 MONTH AS DATE) THEN total_charges_1 END AS p1_total_charges,
        plan_changes AS plan_changes_1m,
        plan_changes
            + CASE WHEN month_1 >= CAST(month - INTERVAL 2 MONTH AS DATE) THEN plan_changes_prev_1 ELSE 0 END
            + CASE WHEN month_2 >= CAST(month - INTERVAL 2 MONTH AS DATE) THEN plan_changes_prev_2 ELSE 0 END AS plan_changes_3m,
        usage_gb AS usage_gb_month,
        CASE WHEN month_1 = CAST(month - INTERVAL 1 MONTH AS DATE) THEN usage_gb_prev_1 ELSE 0 END AS usage_gb_prev_month,
        (usage_gb
            + CASE WHEN month_1 >= CAST(month - INTERVAL 2 MONTH AS DATE) THEN usage_gb_prev_1 ELSE 0 END
            + CASE WHEN month_2 >= CAST(month - INTERVAL 2 MONTH AS DATE) THEN usage_gb_prev_2 ELSE 0 END) / 3 AS usage_gb_3m_avg,
        last_support_call_at_running AS last_support_call_at,
        last_late_payment_at_running AS last_late_payment_at,
        last_outage_at_running AS last_outage_at
    FROM lagged
    WHERE has_snapshot
      AND month >= $partition_start
      AND month < $partition_end
)

SELECT
    h.customer_id,
    h.snapshot_month,
    c.gender,
    c.senior_citizen,
    c.partner,
    c.dependents,
    CAST(date_diff('month', date_trunc('month', c.signup_date), h.snapshot_month) AS INTEGER) AS tenure_months,
    h.contract,
    h.phone_service,
    h.multiple_lines,
    h.internet_service,
    h.online_security,
    h.online_backup,
    h.device_protection,
    h.tech_support,
    h.streaming_tv,
    h.streaming_movies,
    h.paperless_billing,
    h.payment_method,
    CAST(
        CAST(coalesce(h.phone_service, false) AS INTEGER)
        + CAST(h.multiple_lines = 'Yes' AS INTEGER)
        + CAST(h.internet_service <> 'No' AS INTEGER)
        + CAST(h.online_security = 'Yes' AS INTEGER)
        + CAST(h.online_backup = 'Yes' AS INTEGER)
        + CAST(h.device_protection = 'Yes' AS INTEGER)
        + CAST(h.tech_support = 'Yes' AS INTEGER)
        + CAST(h.streaming_tv = 'Yes' AS INTEGER)
        + CAST(h.streaming_movies = 'Yes' AS INTEGER)
    AS INTEGER) AS service_count,
    h.monthly_charges,
    -- Unbilled (NULL) totals: last month's total plus this month's charge when known,
    -- otherwise nothing billed yet (a brand-new customer, as in the Telco file).
    coalesce(h.total_charges, h.p1_total_charges + h.monthly_charges, 0.0) AS total_charges,
    h.total_charges IS NULL AS total_charges_imputed,
    h.monthly_charges - h.p1_monthly_charges AS charge_change_1m,
    h.monthly_charges / nullif(h.p1_monthly_charges, 0) AS charge_ratio_1m,
    h.monthly_charges - h.p3_monthly_charges AS charge_change_3m,
    h.monthly_charges / nullif(h.p3_monthly_charges, 0) AS charge_ratio_3m,
    coalesce(h.monthly_charges > h.p1_monthly_charges, false) AS price_rise_1m,
    coalesce(h.monthly_charges > h.p1_monthly_charges, false)
        OR coalesce(h.p1_monthly_charges > h.p2_monthly_charges, false)
        OR coalesce(h.p2_monthly_charges > h.p3_monthly_charges, false) AS price_rise_3m,
    CAST(h.plan_changes_1m AS INTEGER) AS plan_changes_1m,
    CAST(h.plan_changes_3m AS INTEGER) AS plan_changes_3m,
    h.plan_changes_1m > 0
        OR coalesce(h.contract <> h.p1_contract OR h.internet_service <> h.p1_internet_service, false)
        AS plan_change_1m,
    h.plan_changes_3m > 0
        OR coalesce(h.contract <> h.p1_contract OR h.internet_service <> h.p1_internet_service, false)
        OR coalesce(h.p1_contract <> h.p2_contract OR h.p1_internet_service <> h.p2_internet_service, false)
        OR coalesce(h.p2_contract <> h.p3_contract OR h.p2_internet_service <> h.p3_internet_service, false)
        AS plan_change_3m,
    CAST(coalesce(h.support_calls_30d, 0) AS INTEGER) AS support_calls_30d,
    CAST(coalesce(h.support_calls_90d, 0) AS INTEGER) AS support_calls_90d,
    coalesce(h.support_minutes_90d, 0.0) AS support_minutes_90d,
    CAST(coalesce(h.late_payments_30d, 0) AS INTEGER) AS late_payments_30d,
    CAST(coalesce(h.late_payments_90d, 0) AS INTEGER) AS late_payments_90d,
    coalesce(h.overdue_amount_90d, 0.0) AS overdue_amount_90d,
    CAST(coalesce(h.outages_30d, 0) AS INTEGER) AS outages_30d,
    CAST(coalesce(h.outages_90d, 0) AS INTEGER) AS outages_90d,
    coalesce(h.outage_hours_90d, 0.0) AS outage_hours_90d,
    CAST(least(coalesce(date_diff('day', CAST(h.last_support_call_at AS DATE), CAST(h.month_end AS DATE) - 1), 365), 365) AS INTEGER) AS days_since_support_call,
    CAST(least(coalesce(date_diff('day', CAST(h.last_late_payment_at AS DATE), CAST(h.month_end AS DATE) - 1), 365), 365) AS INTEGER) AS days_since_late_payment,
    CAST(least(coalesce(date_diff('day', CAST(h.last_outage_at AS DATE), CAST(h.month_end AS DATE) - 1), 365), 365) AS INTEGER) AS days_since_outage,
    h.usage_gb_month,
    h.usage_gb_prev_month,
    h.usage_gb_month - h.usage_gb_prev_month AS usage_gb_change_1m,
    h.usage_gb_3m_avg
FROM history AS h
LEFT JOIN staging.customers AS c
  ON c.customer_id = h.customer_id
