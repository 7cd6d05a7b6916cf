"""Command line: ``python -m service serve | dimse | jobs | openapi | config | init-aws``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from service.config import ENV_PREFIX, ConfigError, Settings, describe, load_settings

__all__ = ["main"]


def _serve(settings: Settings) -> int:
    import uvicorn

    _logging(settings)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # Streaming uploads arrive faster in bigger pieces; httptools parses them faster.
        "http": "httptools",
        "loop": "uvloop",
    }
    if settings.workers == 1:
        from service.app import create_app

        uvicorn.run(create_app(settings), **options)
        return 0
    # Worker processes build their app from the environment: pass the command line's
    # overrides on through it. The supervising process never imports the app (pydicom
    # alone brings numpy and Pillow, 40 MB it would hold for nothing).
    for name in ("host", "port", "data_dir"):
        os.environ[f"{ENV_PREFIX}{name.upper()}"] = str(getattr(settings, name))
    from service.http_workers import run_workers

    config = uvicorn.Config(
        "service.app:create_app_from_env", factory=True, workers=settings.workers, **options
    )
    return run_workers(config, settings.workers)


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _dimse(settings: Settings) -> None:
    import anyio

    from service.dimse.sidecar import run
    from service.memory import limit_malloc_arenas

    _logging(settings)
    limit_malloc_arenas(settings.malloc_arenas)
    anyio.run(run, settings)


def _jobs(settings: Settings, args: argparse.Namespace) -> int:
    import anyio

    from service.jobs.cli import list_jobs, retry_jobs

    if args.jobs_command == "list":
        return anyio.run(list_jobs, settings, args.state)
    return anyio.run(retry_jobs, settings, args.id, args.all_dead)


def _openapi(settings: Settings) -> None:
    from service.app import create_app

    schema = create_app(settings).openapi_schema.to_schema()
    # Litestar lists the path parameters of a handler with several paths in set order,
    # which changes from run to run: put them in the order of the path, so that the
    # checked-in document is reproducible.
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if isinstance(operation, dict) and "parameters" in operation:
                operation["parameters"].sort(
                    key=lambda p, path=path: (
                        (0, path.find("{" + p["name"] + "}")) if p.get("in") == "path" else (1, 0)
                    )
                )
    sys.stdout.write(json.dumps(schema, indent=2, sort_keys=True) + "\n")


def _init_aws(settings: Settings) -> int:
    import botocore.exceptions

    from service.aws_init import init_aws
    from service.errors import ServiceError

    try:
        init_aws(settings)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        print(f"init-aws failed: {exc}", file=sys.stderr)
        return 1
    except ServiceError as exc:  # the DynamoDB step reports AWS errors as these
        print(f"init-aws failed: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _config() -> None:
    for variable, default, description in describe():
        print(f"{variable:32} {default:24} {description}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="listen address (DICOMWEB_HOST)")
    serve.add_argument("--port", type=int, help="listen port (DICOMWEB_PORT)")
    serve.add_argument("--data-dir", help="data folder (DICOMWEB_DATA_DIR)")
    dimse = commands.add_parser("dimse", help="run the DIMSE sidecar (DICOMWEB_DIMSE_*)")
    dimse.add_argument("--port", type=int, help="listen port (DICOMWEB_DIMSE_PORT)")
    dimse.add_argument("--data-dir", help="data folder (DICOMWEB_DATA_DIR)")
    jobs = commands.add_parser("jobs", help="list or retry background jobs")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = job_commands.add_parser("list", help="list jobs, oldest first")
    listing.add_argument("--state", choices=["pending", "running", "done", "dead"])
    retry = job_commands.add_parser("retry", help="run dead-lettered jobs again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="the job id")
    which.add_argument("--all-dead", action="store_true", help="every dead job")
    commands.add_parser("openapi", help="print the OpenAPI document")
    commands.add_parser("config", help="list the DICOMWEB_* settings")
    commands.add_parser(
        "init-aws",
        help="create the S3 bucket (and DynamoDB table) the settings name; idempotent",
    )
    args = parser.parse_args(argv)
    if args.command == "config":
        _config()
        return 0
    try:
        overrides = {}
        if args.command == "serve":
            overrides = {"host": args.host, "port": args.port, "data_dir": args.data_dir}
        elif args.command == "dimse":
            overrides = {"dimse_port": args.port, "data_dir": args.data_dir}
        settings = load_settings(overrides=overrides)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings)
    if args.command == "init-aws":
        return _init_aws(settings)
    if args.command == "dimse":
        try:
            _dimse(settings)
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    elif args.command == "jobs":
        return _jobs(settings, args)
    else:
        _openapi(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
