"""Batch scoring, drift monitoring and realised performance of the champion model."""
