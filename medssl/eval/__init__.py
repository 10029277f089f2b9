"""Evaluation: metrics, figures (reconstruction grids, training curves), representation probes and reports."""
from medssl.eval.label_efficiency import label_efficiency_plot, markdown_table, summarise
from medssl.eval.metrics import segmentation_metrics
from medssl.eval.probe import (
    classification_metrics,
    extract_features,
    knn_predict,
    linear_probe_predict,
    probe_report,
)

__all__ = ["classification_metrics", "extract_features", "knn_predict", "label_efficiency_plot",
           "linear_probe_predict", "markdown_table", "probe_report", "segmentation_metrics", "summarise"]
