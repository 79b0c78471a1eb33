"""Evaluation: metrics, business view, plots, model card and the SHAP summary of a registered model."""
