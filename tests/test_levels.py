"""Study and series documents cut from an instance's DICOM JSON object."""

from __future__ import annotations

import json

import msgspec

from service.core.levels import level_documents


def test_documents_keep_the_instance_values_as_written() -> None:
    instance = {
        "00080020": {"vr": "DA", "Value": ["20240101"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0008103E": {"vr": "LO", "Value": ["Head"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00101030": {"vr": "DS", "Value": [msgspec.Raw(b"70.50")]},  # digits kept
        "00109999": {"vr": "OB", "BulkDataURI": "{+bulk}/bulkdata/00109999"},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00200013": {"vr": "IS", "Value": [msgspec.Raw(b"7")]},
    }
    study, series = level_documents(instance)
    assert b'"00101030":{"vr":"DS","Value":[70.50]}' in study
    assert list(json.loads(study)) == ["00080020", "00100010", "00101030", "0020000D"]
    assert list(json.loads(series)) == ["00080060", "0008103E", "0020000D", "0020000E"]
