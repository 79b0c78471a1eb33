-- severity: warn
-- A labelled month where nobody or most customers churned usually means a broken
-- delivery (cancellations missing or mis-dated), not a real month.
SELECT snapshot_month, count(*) AS customers, avg(churned) AS churn_rate
FROM features.labels
WHERE churned IS NOT NULL
GROUP BY snapshot_month
HAVING count(*) >= 100 AND (avg(churned) = 0 OR avg(churned) > 0.5)
