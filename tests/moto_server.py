"""moto's server, answering DynamoDB requests one at a time.

DynamoDB runs a ``TransactWriteItems`` in isolation: all of it or none of it, and no
other write in between. moto applies a transaction's writes one after the other, and
when one of its conditions fails it puts back a copy of the whole table taken when the
transaction began, which erases whatever other requests wrote meanwhile. Its server
answers each connection in a thread of its own, so with concurrent writers (two HTTP
workers storing into one study) acknowledged commits were lost: 8 threads making 320
optimistic increments of one counter, each acknowledged, left it at 317, and
``tests/test_workers.py`` once found 23 instances in a study it had stored 24 in.
Holding one lock around each DynamoDB request gives back the isolation the index
relies on; S3 requests stay concurrent.

Run as ``python tests/moto_server.py -H HOST -p PORT`` (what ``tests/aws.py`` does).
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

_Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class DynamoDBOneAtATime:
    """WSGI middleware: DynamoDB requests (``X-Amz-Target: DynamoDB_...``) take turns."""

    def __init__(self, app: _Wsgi) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            # The whole answer under the lock: a WSGI app may work while it is iterated.
            result = self.app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server: URLs it makes
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        DynamoDBOneAtATime(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
