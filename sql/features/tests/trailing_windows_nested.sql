-- A 30-day window lies inside the 90-day one and a month inside its three-month span;
-- a row breaking that means a window boundary is wrong.
SELECT customer_id, snapshot_month, support_calls_30d, support_calls_90d,
       late_payments_30d, late_payments_90d, outages_30d, outages_90d,
       plan_changes_1m, plan_changes_3m
FROM features.customer_features
WHERE support_calls_30d > support_calls_90d
   OR late_payments_30d > late_payments_90d
   OR outages_30d > outages_90d
   OR plan_changes_1m > plan_changes_3m
   OR (price_rise_1m AND NOT price_rise_3m)
   OR (plan_change_1m AND NOT plan_change_3m)
