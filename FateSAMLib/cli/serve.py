"""``fatesam serve``: the engine as an HTTP server for workstations without a GPU (needs ``fatesam[server]``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TextIO

from ..errors import InputError
from ..options import whole_number_type
from ..progress import CancelToken
from ..server.tokens import is_loopback, load_or_create_token
from ..server.users import Users
from .arguments import add_model_arguments, settings_from_args
from .reporting import Reporter

DEFAULT_PORT = 8765


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fatesam serve``."""
    serve = subparsers.add_parser("serve", help="run jobs for remote clients (Slicer, 'segment --server') over HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default this computer only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    serve.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1: one GPU)")
    serve.add_argument("--queue-size", type=int, default=8, help="jobs that may wait; more are refused (503)")
    serve.add_argument("--max-upload-mb", type=float, default=2048, help="largest request body (default 2048 MB)")
    serve.add_argument("--keep-results-minutes", type=float, default=60, help="finished jobs' results kept (60)")
    serve.add_argument("--keep-support-sets-hours", type=float, default=24, help="unused support sets kept (24)")
    serve.add_argument(
        "--abandon-minutes", type=float, default=10, help="cancel a job no client asked about for this long (10)"
    )
    serve.add_argument("--token-file", type=Path, help="token file (default: server-token in the config folder)")
    serve.add_argument(
        "--users", type=Path, metavar="FILE", help="named users instead of one token ('fatesam users add' makes it)"
    )
    serve.add_argument(
        "--jobs-per-user", type=whole_number_type("--jobs-per-user"), default=8, help="unfinished jobs per user (8)"
    )
    serve.add_argument(
        "--support-sets-per-user",
        type=whole_number_type("--support-sets-per-user"),
        default=16,
        help="support sets a user may hold (16)",
    )
    serve.add_argument(
        "--max-models",
        type=whole_number_type("--max-models", minimum=0),
        default=2,
        help="models kept loaded between jobs (2; 0: each job loads its model)",
    )
    serve.add_argument("--no-auth", action="store_true", help="no token (refused unless --host is a loopback address)")
    serve.add_argument("--ssl-certfile", type=Path, help="TLS certificate (PEM) for https")
    serve.add_argument("--ssl-keyfile", type=Path, help="TLS private key (PEM) for https")
    serve.add_argument("--work-dir", type=Path, help="where the private folder of uploads goes (default temp)")
    add_model_arguments(serve)
    serve.set_defaults(func=run_serve, reporting=True)


def run_serve(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Check the options, load or create the token, and serve until Ctrl+C or SIGTERM (which cancels every job)."""
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise InputError("--ssl-certfile and --ssl-keyfile go together; give both for https, or neither.")
    for option in ("workers", "queue_size"):
        if getattr(args, option) < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1 (got {getattr(args, option)}).")
    token, users = None, None
    if args.users is not None:
        if args.no_auth or args.token_file is not None:
            raise InputError("--users replaces the one token: leave out --no-auth and --token-file.")
        users = Users.read(args.users)
        reporter.stderr.write(f"Users: the {len(users.digests)} in {args.users}\n")
    elif args.no_auth:
        if not is_loopback(args.host):
            raise InputError(
                f"--no-auth is for this computer only: {args.host} is reachable from the network. Leave out "
                "--no-auth (clients then need the token), or listen on 127.0.0.1."
            )
        reporter.warning("--no-auth: every program on this computer can use the server.")
    else:
        token, path, created = load_or_create_token(args.token_file)
        if created:
            reporter.stderr.write(f"New token (kept in {path}; give it to the clients, it is shown only once):\n")
            reporter.stderr.write(f"{token}\n")
        else:
            reporter.stderr.write(f"Token: the one in {path}\n")
    scheme = "https" if args.ssl_certfile else "http"
    if scheme == "http" and not is_loopback(args.host):
        reporter.warning(
            f"Listening on {args.host} without TLS: the token and the images cross the network readable. Pass "
            "--ssl-certfile and --ssl-keyfile, or put the server behind an https proxy."
        )
    try:
        import uvicorn

        from ..server.app import ServerConfig, create_app
    except ImportError as error:
        raise InputError(
            f"'fatesam serve' needs the server extra ({error.name} is missing): pip install 'fatesam[server]'."
        ) from None
    config = ServerConfig(
        settings=dataclasses.replace(settings_from_args(args), feature_cache=None),
        token=token,
        users=users,
        jobs_per_user=args.jobs_per_user,
        support_sets_per_user=args.support_sets_per_user,
        max_models=args.max_models,
        max_upload_bytes=int(args.max_upload_mb * 1024**2),
        workers=args.workers,
        queue_size=args.queue_size,
        keep_results_s=args.keep_results_minutes * 60,
        keep_support_sets_s=args.keep_support_sets_hours * 3600,
        abandon_after_s=args.abandon_minutes * 60,
        work_dir=args.work_dir,
    )
    reporter.stderr.write(f"FateSAM server on {scheme}://{args.host}:{args.port} (API docs at /docs)\n")
    reporter.stderr.flush()
    _log_jobs(reporter.stderr)
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        log_level="info",
    )
    return 0


def _log_jobs(stream: TextIO) -> None:
    """One line per job start, finish, failure and cancel (user, job id, seconds), beside uvicorn's access lines."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    log = logging.getLogger("fatesam.server")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
