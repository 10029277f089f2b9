"""Data layer: DICOM/NIfTI readers, archive index, preprocessing cache, datasets, phantoms."""
