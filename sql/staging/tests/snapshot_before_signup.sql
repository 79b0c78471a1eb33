-- severity: warn
-- Snapshots of a month that ends before the customer signed up: the tenure would be negative.
SELECT s.customer_id, s.snapshot_month, c.signup_date
FROM staging.subscriptions AS s
JOIN staging.customers AS c ON c.customer_id = s.customer_id
WHERE c.signup_date >= CAST(s.snapshot_month + INTERVAL 1 MONTH AS DATE)
