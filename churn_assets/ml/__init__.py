"""Machine learning: training set split, candidate models, tuning, registry, evaluation, SHAP."""
