"""Evaluation: metrics, figures (reconstruction grids, training curves), representation probes and reports."""
from medssl.eval.probe import (
    classification_metrics,
    extract_features,
    knn_predict,
    linear_probe_predict,
    probe_report,
)

__all__ = ["classification_metrics", "extract_features", "knn_predict", "linear_probe_predict", "probe_report"]
