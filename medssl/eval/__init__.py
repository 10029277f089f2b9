"""Evaluation: metrics, figures (reconstruction grids, training curves, overlays, embedding maps, archive QC),
representation probes and reports."""
from medssl.eval.archive_figures import index_accounting, orthogonal_planes, volume_planes
from medssl.eval.figures import embedding_map, segmentation_overlay, segmentation_overlays
from medssl.eval.label_efficiency import label_efficiency_plot, markdown_table, summarise
from medssl.eval.metrics import segmentation_metrics
from medssl.eval.plots import reconstruction_grid, training_curves
from medssl.eval.precise_bn import recalibrated_copy
from medssl.eval.probe import (
    classification_metrics,
    extract_features,
    knn_predict,
    linear_probe_predict,
    probe_report,
)
from medssl.eval.report import build_report

__all__ = ["build_report", "classification_metrics", "embedding_map", "extract_features", "index_accounting",
           "knn_predict", "label_efficiency_plot", "linear_probe_predict", "markdown_table", "orthogonal_planes",
           "probe_report", "recalibrated_copy", "reconstruction_grid", "segmentation_metrics", "segmentation_overlay",
           "segmentation_overlays", "summarise", "training_curves", "volume_planes"]
