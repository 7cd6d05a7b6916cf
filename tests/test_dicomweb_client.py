"""Interoperability: the independent ``dicomweb-client`` package against our server."""

from __future__ import annotations

import io

import pydicom
from dicomweb_client.api import DICOMwebClient

from tests.dicomgen import make_dataset, new_uid
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
