"""Evaluation: metrics, figures (reconstruction grids, training curves) and reports."""
