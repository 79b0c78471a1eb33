SELECT
    f.*,
    l.churned
FROM features.customer_features AS f
JOIN features.labels AS l
  ON l.customer_id = f.customer_id AND l.snapshot_month = f.snapshot_month
WHERE l.churned IS NOT NULL
