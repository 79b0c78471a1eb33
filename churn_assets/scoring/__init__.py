"""Scoring: batch scoring with risk bands and per-customer explanations of the champion."""
