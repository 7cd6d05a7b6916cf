"""Several HTTP worker processes on one embedded store: every answer is the same
whichever worker gives it, and uploads through both land once."""

from __future__ import annotations

import concurrent.futures

import httpx
import psutil

from tests.dicomgen import make_instance, new_uid
from tests.helpers import multipart, stow_headers


def test_two_workers_share_the_store(start_server) -> None:  # type: ignore[no-untyped-def]
    proc = start_server(workers="2", metadata_warm_delay="0")
    assert proc.proc is not None
    children = psutil.Process(proc.proc.pid).children()
    # uvicorn's two workers, beside multiprocessing's resource tracker
    workers = [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]
    assert len(workers) == 2
    study = new_uid()
    instances = [make_instance(study=study, instance_number=i) for i in range(24)]

    def stow(chunk: list[bytes]) -> int:
        with httpx.Client(base_url=proc.root, timeout=60) as client:
            r = client.post("/studies", content=multipart(*chunk), headers=stow_headers())
            return r.status_code

    # Fresh connections spread the uploads over both workers; two carry the same
    # instances, which must be stored once (identical bytes succeed).
    chunks = [instances[i : i + 4] for i in range(0, 24, 4)] + [instances[:4]]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(stow, chunks)) == {200}
    for _ in range(6):  # new connections: both workers answer
        with httpx.Client(base_url=proc.root) as client:
            found = client.get("/studies", params={"StudyInstanceUID": study}).json()
            assert found[0]["00201208"]["Value"] == [24]
            meta = client.get(f"/studies/{study}/metadata").json()
            assert len(meta) == 24
