"""Interoperability: the independent ``dicomweb-client`` package against our server."""

from __future__ import annotations

import io

import pydicom
from dicomweb_client.api import DICOMwebClient

from tests.dicomgen import make_dataset, new_uid
from tests.framegen import reference_frames, renamed
from tests.helpers import pydicom_file
from tests.server import ServerProcess


def test_store_retrieve_and_metadata(server: ServerProcess) -> None:
    client = DICOMwebClient(url=server.root)
    study, series = new_uid(), new_uid()
    datasets = [make_dataset(study=study, series=series, instance_number=i) for i in (1, 2)]
    datasets.append(pydicom.dcmread(io.BytesIO(pydicom_file("CT_small.dcm"))))
    response = client.store_instances(datasets[:2])
    assert len(response.ReferencedSOPSequence) == 2
    client.store_instances(datasets[2:], study_instance_uid=datasets[2].StudyInstanceUID)

    got = client.retrieve_instance(
        study, series, datasets[1].SOPInstanceUID, media_types=(("application/dicom", "*"),)
    )
    assert got.SOPInstanceUID == datasets[1].SOPInstanceUID
    assert got.PixelData == datasets[1].PixelData

    series_instances = client.retrieve_series(
        study, series, media_types=(("application/dicom", "*"),)
    )
    assert sorted(i.SOPInstanceUID for i in series_instances) == sorted(
        d.SOPInstanceUID for d in datasets[:2]
    )
    ct = datasets[2]
    [ct_back] = client.retrieve_study(ct.StudyInstanceUID)
    assert ct_back.PixelData == ct.PixelData

    metadata = client.retrieve_study_metadata(study)
    assert len(metadata) == 2
    parsed = pydicom.Dataset.from_json(metadata[0], bulk_data_uri_handler=lambda *_: b"")
    assert parsed.StudyInstanceUID == study
    assert parsed.PatientName == "DOE^JANE"
    series_meta = client.retrieve_series_metadata(study, series)
    assert {m["00080018"]["Value"][0] for m in series_meta} == {
        d.SOPInstanceUID for d in datasets[:2]
    }


def test_frames_and_transcoding(server: ServerProcess) -> None:
    client = DICOMwebClient(url=server.root)
    data = renamed("SC_rgb_rle_2frame.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    client.store_instances([ds])
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    stored = client.retrieve_instance_frames(
        *uids, frame_numbers=[2, 1], media_types=(("image/dicom-rle", "1.2.840.10008.1.2.5"),)
    )
    assert stored == reference_frames(data)[::-1]
    native = client.retrieve_instance_frames(
        *uids, frame_numbers=[2], media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),)
    )
    assert native == [ds.pixel_array[1].tobytes()]

    back = client.retrieve_instance(
        *uids, media_types=(("application/dicom", "1.2.840.10008.1.2.1"),)
    )
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (back.pixel_array == ds.pixel_array).all()
