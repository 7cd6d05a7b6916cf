"""``python -m service dimse``: the DIMSE sidecar process.

It opens the same backends as the HTTP service (``open_services``), so C-STORE goes
through the very store path STOW-RS uses, in-process (see README, "DIMSE sidecar"),
starts the Application Entity, and runs the forwarding worker on its event loop until
SIGTERM or SIGINT, then stops accepting associations and lets running ones finish.
"""

from __future__ import annotations

import logging
import signal

import anyio
from anyio.from_thread import BlockingPortal

from service.config import Settings
from service.context import open_services
from service.dimse.ae import build_ae, start_server
from service.dimse.find import FindService
from service.dimse.retrieve import RetrieveService
from service.dimse.scp import Handlers
from service.dimse.scu import Forwarder, Worker, load_destinations
from service.jobs.backends import open_jobs

__all__ = ["run"]

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    # pynetdicom logs every message at INFO: per-instance noise at hundreds a second.
    if settings.log_level != "debug":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    destinations = load_destinations(settings)
    services = await open_services(settings)
    jobs = await open_jobs(settings)
    try:
        async with BlockingPortal() as portal, anyio.create_task_group() as tasks:
            handlers = Handlers(
                portal,
                services.stow,
                FindService(services.qido, page_size=settings.qido_max_limit),
                RetrieveService(services.index, services.storage, store=settings.store),
                Forwarder(jobs, destinations, settings.store),
                {title: (d.host, d.port) for title, d in destinations.items()},
            )
            ae = build_ae(settings)
            server = await anyio.to_thread.run_sync(start_server, ae, settings, handlers)
            host, port = server.server_address[:2]
            log.info(
                "DIMSE sidecar %s listening on %s:%s; forwarding to %s",
                settings.dimse_ae_title,
                host,
                port,
                ", ".join(t for t, d in destinations.items() if d.forward) or "nobody",
            )
            worker = Worker(jobs, services.storage, services.index, destinations, settings)
            tasks.start_soon(worker.run)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal %d: shutting down", signum)
                    break
            # Stop accepting; shutdown() waits in a thread, since running associations
            # need the event loop (the portal) to finish their stores.
            await anyio.to_thread.run_sync(ae.shutdown)
            tasks.cancel_scope.cancel()
    finally:
        await jobs.close()
        await services.close()
