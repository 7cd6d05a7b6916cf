"""The checked-in OpenAPI document is what the code generates (``make openapi``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OPENAPI = Path(__file__).parent.parent / "openapi" / "openapi.json"


def test_openapi_document_is_current() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "service", "openapi"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PATH": "/usr/bin"},
    ).stdout
    assert OPENAPI.exists(), "run `make openapi` and commit openapi/openapi.json"
    assert json.loads(generated) == json.loads(OPENAPI.read_text()), (
        "openapi/openapi.json is out of date: run `make openapi` and commit it"
    )
