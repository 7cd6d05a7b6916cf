"""Synthetic Part 10 instances for tests: small, deterministic, any size or syntax."""

from __future__ import annotations

import io
import uuid

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def new_uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def make_dataset(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    rows: int = 4,
    cols: int = 4,
    frames: int = 1,
    patient_name: str = "DOE^JANE",
    patient_id: str = "PID1",
    instance_number: int = 1,
    pixel_seed: int = 0,
) -> Dataset:
    meta = FileMetaDataset()
    sop = sop or new_uid()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study or new_uid()
    ds.SeriesInstanceUID = series or new_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.StudyDate = "20240102"
    ds.Modality = "CT"
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((pixel_seed + i) % 251 for i in range(rows * cols * 2 * frames))
    return ds


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def make_instance(**kwargs: object) -> bytes:
    return encode(make_dataset(**kwargs))  # type: ignore[arg-type]
