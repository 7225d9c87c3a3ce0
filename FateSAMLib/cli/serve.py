"""``fatesam serve``: the engine as an HTTP server for workstations without a GPU (needs ``fatesam[server]``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..options import SETTINGS
from ..progress import CancelToken
from ..remote import settings_arguments
from ..server.tokens import is_loopback, load_or_create_token
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
    serve.add_argument("--no-auth", action="store_true", help="no token (refused unless --host is a loopback address)")
    serve.add_argument("--ssl-certfile", type=Path, help="TLS certificate (PEM) for https")
    serve.add_argument("--ssl-keyfile", type=Path, help="TLS private key (PEM) for https")
    serve.add_argument("--work-dir", type=Path, help="where the private folder of uploads goes (default temp)")
    add_model_arguments(serve)
    serve.set_defaults(func=run_serve, reporting=True)


def engine_arguments(args: argparse.Namespace) -> tuple[str, ...]:
    """The model options given to ``serve``, as ``fatesam segment`` options for every job."""
    settings = settings_from_args(args)  # checked now, before listening
    changed = {
        name: getattr(settings, name)
        for name, setting in SETTINGS.items()
        if getattr(settings, name) != setting.default and name != "feature_cache"
    }
    return tuple(settings_arguments(changed, allowed=tuple(SETTINGS)))


def run_serve(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Check the options, load or create the token, and serve until Ctrl+C or SIGTERM (which cancels every job)."""
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise InputError("--ssl-certfile and --ssl-keyfile go together; give both for https, or neither.")
    for option in ("workers", "queue_size"):
        if getattr(args, option) < 1:
            raise InputError(f"--{option.replace('_', '-')} must be at least 1 (got {getattr(args, option)}).")
    token = None
    if args.no_auth:
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
        engine_arguments=engine_arguments(args),
        token=token,
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
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        log_level="info",
    )
    return 0
