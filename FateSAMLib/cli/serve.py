"""``fatesam serve``: the engine as an HTTP server for workstations without a GPU (needs ``fatesam[server]``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import TextIO

from ..errors import InputError
from ..options import positive_number_type, whole_number_type
from ..progress import CancelToken
from ..server.limits import DEFAULT_MAX_VOXELS, DEFAULT_UPLOAD_TIMEOUT_S, SECONDS_PER_UPLOADED_MB, SHUTDOWN_GRACE_S
from ..server.tokens import is_loopback, load_or_create_token
from ..server.users import Users
from ..server.work_folder import prepare_root
from .arguments import add_model_arguments, settings_from_args
from .reporting import Reporter

DEFAULT_PORT = 8765
BACKLOG = 2048
"""Connections waiting to be accepted (uvicorn's default)."""


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fatesam serve``."""
    serve = subparsers.add_parser("serve", help="run jobs for remote clients (Slicer, 'segment --server') over HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default this computer only)")
    serve.add_argument(
        "--port", type=whole_number_type("--port", 1, 65535), default=DEFAULT_PORT, help=f"TCP port ({DEFAULT_PORT})"
    )
    serve.add_argument("--workers", type=whole_number_type("--workers"), default=1, help="jobs run at once (1)")
    serve.add_argument(
        "--queue-size", type=whole_number_type("--queue-size"), default=8, help="jobs that may wait; more get 503 (8)"
    )
    serve.add_argument(
        "--max-upload-mb", type=positive_number_type("--max-upload-mb"), default=2048, help="largest body (2048 MB)"
    )
    serve.add_argument(
        "--max-voxels",
        type=whole_number_type("--max-voxels"),
        default=DEFAULT_MAX_VOXELS,
        help=f"most voxels an uploaded volume may hold (default {DEFAULT_MAX_VOXELS}: 2000 slices of 512 x 512)",
    )
    serve.add_argument(
        "--upload-timeout-seconds",
        type=positive_number_type("--upload-timeout-seconds"),
        default=DEFAULT_UPLOAD_TIMEOUT_S,
        help=f"cut an upload not done in this long plus {SECONDS_PER_UPLOADED_MB:g} s per MB (60)",
    )
    for flag, default, what in (
        ("--keep-results-minutes", 60, "finished jobs' results kept"),
        ("--keep-support-sets-hours", 24, "unused support sets kept"),
        ("--abandon-minutes", 10, "cancel a job no client asked about for this long"),
    ):
        serve.add_argument(flag, type=positive_number_type(flag), default=default, help=f"{what} ({default})")
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
    serve.add_argument(
        "--work-dir", type=Path, help="where the server's private folder goes (default the temporary folder)"
    )
    add_model_arguments(serve)
    serve.set_defaults(func=run_serve, reporting=True)


def check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    """InputError unless both or neither are given, and the certificate and key load as a pair."""
    if (certfile is None) != (keyfile is None):
        raise InputError("--ssl-certfile and --ssl-keyfile go together; give both for https, or neither.")
    if certfile is None:
        return
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not Path(path).is_file():
            raise InputError(f"{flag} {path} is not a file; give the path of the PEM file.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        raise InputError(
            f"The TLS certificate {certfile} and key {keyfile} cannot be used ({error.strerror or error}); give a "
            "PEM certificate and its unencrypted private key."
        ) from None


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` for the server; InputError when the address cannot be used."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listening = socket.socket(family, kind, protocol)
    except OSError as error:
        raise InputError(f"Cannot listen on {host}:{port} ({error.strerror or error}); check --host.") from None
    try:
        if os.name != "nt":
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen(BACKLOG)  # clients may connect from now on; they are answered once the server has started
    except OSError as error:
        listening.close()
        raise InputError(
            f"Cannot listen on {host}:{port} ({error.strerror or error}); choose another --port (or stop what uses "
            "it), or an address of this computer as --host."
        ) from None
    return listening


def run_serve(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Check the options, load or create the token, and serve until Ctrl+C or SIGTERM (which cancels every job)."""
    check_tls(args.ssl_certfile, args.ssl_keyfile)
    prepare_root(args.work_dir)
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
        upload_timeout_s=args.upload_timeout_seconds,
        max_voxels=args.max_voxels,
    )
    listening = listening_socket(args.host, args.port)
    reporter.stderr.write(f"FateSAM server on {scheme}://{args.host}:{args.port} (API docs at /docs)\n")
    reporter.stderr.flush()
    _log_jobs(reporter.stderr)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            log_level="info",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
    )
    server.run(sockets=[listening])
    return 0 if server.started else 1


def _log_jobs(stream: TextIO) -> None:
    """One line per job start, finish, failure and cancel (user, job id, seconds), beside uvicorn's access lines."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    log = logging.getLogger("fatesam.server")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
