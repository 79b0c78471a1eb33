-- Features joined with known labels. The first three delivered months are left out when
-- later ones exist: their 90-day windows and 3-month charge comparisons reach back before
-- the data starts, so they look systematically different from every later month.
--
-- The bound is one scalar, computed from the distinct months of the two tables (a few
-- dozen rows): the first full month when some month at or after it has both features and
-- a known label, else the first month (keep everything). A month of features.labels is
-- known for every row or for none (churned is NULL exactly while M+1 is unobserved) and
-- every feature row has its label row (both come from staging.subscriptions), so this
-- is "a labelled feature row exists from the first full month on", without a second pass
-- over the joined rows.
WITH feature_months AS (
    SELECT DISTINCT snapshot_month FROM features.customer_features
),

labelled_months AS (
    SELECT DISTINCT snapshot_month FROM features.labels WHERE churned IS NOT NULL
),

bounds AS (
    SELECT
        min(snapshot_month) AS first_month,
        CAST(min(snapshot_month) + INTERVAL 3 MONTH AS DATE) AS first_full_month
    FROM feature_months
),

kept_from AS (
    SELECT
        CASE
            WHEN EXISTS (
                SELECT 1
                FROM feature_months AS f
                JOIN labelled_months AS l USING (snapshot_month)
                WHERE f.snapshot_month >= b.first_full_month
            ) THEN b.first_full_month
            ELSE b.first_month
        END AS first_kept_month
    FROM bounds AS b
)

SELECT
    f.*,
    l.churned
FROM features.customer_features AS f
JOIN features.labels AS l
  ON l.customer_id = f.customer_id AND l.snapshot_month = f.snapshot_month
WHERE l.churned IS NOT NULL
  AND f.snapshot_month >= (SELECT first_kept_month FROM kept_from)
