"""The `churn` command."""
