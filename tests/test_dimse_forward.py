"""Forwarding as durable jobs: DCMTK storescp as the destination, up, down, then up."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dicomgen import encode, make_dataset
from tests.dimse import SidecarProcess, StoreSCP, run, split_part10
from tests.server import free_port

pytestmark = pytest.mark.timeout(180)


def wait_for(check: Callable[[], bool], seconds: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def job_states(sidecar: SidecarProcess, state: str | None = None) -> list[tuple[str, str, int]]:
    """(id, state, attempts) of each job, from the operator's ``jobs list``."""
    args = ["list", *(["--state", state] if state else [])]
    result = sidecar.jobs(*args)
    assert result.returncode == 0, result.stderr
    out = []
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and len(fields[0]) == 32:
            out.append((fields[0], fields[1], int(fields[2])))
    return out


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[StoreSCP]]:
    started: list[StoreSCP] = []
    yield started
    for scp in started:
        scp.stop()


@pytest.fixture
def sidecars() -> Iterator[list[SidecarProcess]]:
    started: list[SidecarProcess] = []
    yield started
    for proc in started:
        proc.stop()


def sidecar_env(destinations: list[dict[str, object]], **extra: str) -> dict[str, str]:
    env = {
        "DICOMWEB_DIMSE_FORWARD": json.dumps(destinations),
        "DICOMWEB_JOB_RETRY_BASE": "0.2",
        "DICOMWEB_JOB_RETRY_MAX": "1",
    }
    env.update({f"DICOMWEB_{k.upper()}": v for k, v in extra.items()})
    return env


def send(sidecar: SidecarProcess, tmp_path: Path, modality: str = "CT") -> tuple[str, bytes]:
    ds = make_dataset()
    ds.Modality = modality
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(encode(ds))
    result = run(
        "storescu",
        "-aet",
        "CT01",
        "-aec",
        sidecar.ae_title,
        "127.0.0.1",
        str(sidecar.port),
        str(path),
    )
    assert result.returncode == 0, result.stderr
    [stored] = (sidecar.data_dir / "blobs").rglob(f"{ds.SOPInstanceUID}.dcm")
    return ds.SOPInstanceUID, stored.read_bytes()


def test_forwards_by_rule_byte_for_byte(
    tmp_path: Path, stores: list[StoreSCP], sidecars: list[SidecarProcess]
) -> None:
    dest = StoreSCP(tmp_path / "dest").start()
    stores.append(dest)
    mr_only = [{"ae_title": "MRPACS", "host": "127.0.0.1", "port": free_port(), "modality": ["MR"]}]
    everything = [
        {"ae_title": dest.ae_title, "host": "127.0.0.1", "port": dest.port, "calling_ae": ["CT01"]}
    ]
    sidecar = SidecarProcess(tmp_path / "data", sidecar_env(everything + mr_only)).start()
    sidecars.append(sidecar)
    sop, stored = send(sidecar, tmp_path)
    # storescp answers once it has written the file: a done job means a complete file
    wait_for(lambda: [s for _, s, _ in job_states(sidecar)] == ["done"], what="job done")
    [received] = [p for p in dest.received() if sop in p.name]
    assert split_part10(received.read_bytes())[1] == split_part10(stored)[1]
    listing = sidecar.jobs("list", "--state", "done").stdout
    assert f"forward {sop} to DEST" in listing and "status 0x0000" in listing


def test_destination_down_then_up_across_a_restart(
    tmp_path: Path, stores: list[StoreSCP], sidecars: list[SidecarProcess]
) -> None:
    port = free_port()
    env = sidecar_env([{"ae_title": "DEST", "host": "127.0.0.1", "port": port}])
    sidecar = SidecarProcess(tmp_path / "data", env).start()
    sidecars.append(sidecar)
    sop, stored = send(sidecar, tmp_path)
    wait_for(lambda: any(n >= 2 for _, _, n in job_states(sidecar)), what="a retried attempt")
    [(job, state, _)] = job_states(sidecar)
    assert state in ("pending", "running")
    assert "association with DEST@127.0.0.1" in sidecar.jobs("list").stdout
    sidecar.stop()  # the sidecar restarts while the job waits
    sidecar.start()
    dest = StoreSCP(tmp_path / "dest", port=port).start()
    stores.append(dest)
    wait_for(
        lambda: [(i, s) for i, s, _ in job_states(sidecar)] == [(job, "done")],
        what="delivery after restart",
    )
    [received] = dest.received()
    assert sop in received.name
    assert split_part10(received.read_bytes())[1] == split_part10(stored)[1]


def test_dead_letter_listed_and_retried(
    tmp_path: Path, stores: list[StoreSCP], sidecars: list[SidecarProcess]
) -> None:
    port = free_port()
    env = sidecar_env(
        [{"ae_title": "DEST", "host": "127.0.0.1", "port": port}], job_max_attempts="2"
    )
    sidecar = SidecarProcess(tmp_path / "data", env).start()
    sidecars.append(sidecar)
    sop, _ = send(sidecar, tmp_path)
    wait_for(lambda: len(job_states(sidecar, "dead")) == 1, what="dead letter")
    [(job, _, attempts)] = job_states(sidecar, "dead")
    assert attempts == 2
    dest = StoreSCP(tmp_path / "dest", port=port).start()
    stores.append(dest)
    time.sleep(1)
    assert dest.received() == []  # dead jobs are not run until an operator says so
    retried = sidecar.jobs("retry", "--all-dead")
    assert retried.returncode == 0 and f"{job}: pending again" in retried.stdout
    wait_for(lambda: [s for _, s, _ in job_states(sidecar)] == ["done"], what="job done")
    assert [sop in p.name for p in dest.received()] == [True]
    assert sidecar.jobs("retry", job).returncode == 1  # no longer dead


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"ae_title": "X"}', "Expected `array`"),
        ('[{"ae_title": "PACS", "host": "h", "port": 104, "modalty": ["CT"]}]', "modalty"),
        ('[{"ae_title": "PACS", "host": "h", "port": 0}]', "port"),
        ('[{"ae_title": "PACS", "host": "h"}]', "port"),
        (
            '[{"ae_title": "P", "host": "h", "port": 1}, {"ae_title": "P", "host": "i", "port": 2}]',
            "own ae_title",
        ),
        ("not json", "JSON"),
    ],
)
def test_forward_setting_is_validated_strictly(value: str, problem: str) -> None:
    from service.config import ConfigError, load_settings
    from service.dimse.scu import load_destinations

    settings = load_settings({"DICOMWEB_DIMSE_FORWARD": value})
    with pytest.raises(ConfigError, match=problem):
        load_destinations(settings)


def test_sidecar_refuses_to_start_on_a_bad_forward_setting(tmp_path: Path) -> None:
    proc = SidecarProcess(tmp_path / "data", {"DICOMWEB_DIMSE_FORWARD": '[{"ae_title": 1}]'})
    with pytest.raises(RuntimeError, match="DICOMWEB_DIMSE_FORWARD"):
        proc.start()


def test_rules_and_backoff() -> None:
    from service.config import load_settings
    from service.dimse.scu import Destination, Worker

    ct_from_ct01 = Destination(ae_title="A", host="h", port=1, modality=["CT"], calling_ae=["CT01"])
    assert ct_from_ct01.wants("CT", "CT01")
    assert not ct_from_ct01.wants("MR", "CT01") and not ct_from_ct01.wants("CT", "OTHER")
    assert Destination(ae_title="A", host="h", port=1).wants("", "")
    assert not Destination(ae_title="A", host="h", port=1, forward=False).wants("CT", "CT01")
    settings = load_settings({"DICOMWEB_JOB_RETRY_BASE": "2", "DICOMWEB_JOB_RETRY_MAX": "30"})
    worker = Worker(None, None, None, {}, settings)  # type: ignore[arg-type]
    assert [worker.backoff(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
