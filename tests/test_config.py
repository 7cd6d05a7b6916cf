from __future__ import annotations

import subprocess
import sys

import pytest

from service.config import ConfigError, Settings, describe, load_settings


def test_defaults_are_the_embedded_service() -> None:
    s = load_settings({})
    assert (s.host, s.port, s.root, s.store, s.duplicates) == (
        "127.0.0.1",
        8080,
        "/dicom-web",
        "default",
        "reject",
    )
    assert s.storage_url.startswith("file:///") and s.storage_url.endswith("/data/blobs")
    assert s.index_url.startswith("sqlite:////") is False
    assert s.index_url.startswith("sqlite:///") and s.index_url.endswith("/data/index.sqlite")


def test_environment_is_typed() -> None:
    s = load_settings({"DICOMWEB_PORT": "9000", "DICOMWEB_DUPLICATES": "replace", "HOME": "/x"})
    assert s.port == 9000 and s.duplicates == "replace"


def test_overrides_win_over_environment() -> None:
    s = load_settings({"DICOMWEB_PORT": "9000"}, {"port": 9100, "host": None})
    assert s.port == 9100 and s.host == "127.0.0.1"


def test_unknown_variable_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="DICOMWEB_PROT") as info:
        load_settings({"DICOMWEB_PROT": "1"})
    assert "DICOMWEB_PORT" in str(info.value)  # lists the known ones


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("DICOMWEB_PORT", "eighty", "port"),
        ("DICOMWEB_DUPLICATES", "overwrite", "duplicates"),
        ("DICOMWEB_MAX_REQUEST_BYTES", "0", "max_request_bytes"),
        ("DICOMWEB_STORE", "Bad Name", "store"),
    ],
)
def test_invalid_values_are_refused(key: str, value: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings({key: value})


def test_every_setting_is_documented() -> None:
    rows = describe()
    assert len(rows) == len(Settings.__struct_fields__)
    assert all(description for _, _, description in rows)


def test_serve_refuses_unknown_variable_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env={"DICOMWEB_NOPE": "1", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "DICOMWEB_NOPE" in result.stderr


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    from service.config import describe

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [name for name, _, _ in describe() if f"`{name}`" not in readme]
    assert not missing, f"settings missing from the README's configuration table: {missing}"
