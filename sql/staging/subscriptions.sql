-- A re-delivered snapshot replaces the earlier one for the same customer and month.
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
FROM raw.subscriptions
QUALIFY row_number() OVER (
    PARTITION BY trim(customer_id), date_trunc('month', snapshot_month)
    ORDER BY delivery_month DESC
) = 1
