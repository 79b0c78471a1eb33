"""Drift, realised performance and the retraining policy of the champion model."""
