"""The header every synthetic enhanced multi-frame test object starts from."""
from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def enhanced_dataset(sop_class: str, modality: str, series_number: int) -> Dataset:
    """A new enhanced image object (explicit VR little endian, fresh UIDs) of ``sop_class``, before any pixels,
    dimensions or functional groups."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.SeriesNumber = modality, series_number
    return ds
