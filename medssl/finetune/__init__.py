"""Few-label transfer: recorded label subsets, classification fine-tuning and the label-efficiency protocol.

``subsets`` draws the labelled items, ``classification`` fine-tunes (or linearly probes) an exported encoder,
``protocol`` runs linear probe / kNN / fine-tune / from-scratch over label fractions and seeds and writes the
report (``medssl evaluate --protocol configs/finetune/<file>.yaml``).
"""
from medssl.finetune.subsets import SubsetRecord, label_subset

__all__ = ["SubsetRecord", "label_subset"]
