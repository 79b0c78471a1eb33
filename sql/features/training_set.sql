-- Features joined with known labels. The first three delivered months are left out when
-- later ones exist: their 90-day windows and 3-month charge comparisons reach back before
-- the data starts, so they look systematically different from every later month.
WITH labelled AS (
    SELECT
        f.*,
        l.churned
    FROM features.customer_features AS f
    JOIN features.labels AS l
      ON l.customer_id = f.customer_id AND l.snapshot_month = f.snapshot_month
    WHERE l.churned IS NOT NULL
),
warm_up AS (
    SELECT CAST(min(snapshot_month) + INTERVAL 3 MONTH AS DATE) AS first_full_month
    FROM features.customer_features
)
SELECT labelled.*
FROM labelled
CROSS JOIN warm_up
WHERE labelled.snapshot_month >= warm_up.first_full_month
   OR NOT EXISTS (
        SELECT 1 FROM labelled AS later WHERE later.snapshot_month >= warm_up.first_full_month
   )
