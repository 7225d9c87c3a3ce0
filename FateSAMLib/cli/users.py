"""``fatesam users add NAME --users FILE``: a named user of ``fatesam serve --users FILE``, whose token is printed
once (the file keeps only its SHA-256, mode 0600)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..progress import CancelToken
from ..server.users import add_user
from .reporting import Reporter


def run_users(args: argparse.Namespace, reporter: Reporter, cancel: CancelToken) -> int:
    """Add the user and print their token, once."""
    token = add_user(args.users, args.name)
    reporter.stderr.write(f"Added '{args.name}' to {args.users}. Their token, shown only this once:\n")
    reporter.stdout.write(f"{token}\n")
    return 0


def add_users_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fatesam users add``."""
    users = subparsers.add_parser("users", help="named users of 'fatesam serve --users FILE'")
    actions = users.add_subparsers(dest="users_action", metavar="{add}", required=True)
    add = actions.add_parser("add", help="add a user and print their token once (the file keeps only its hash)")
    add.add_argument("name", help="the user's name (letters, digits, '.', '_', '-')")
    add.add_argument("--users", type=Path, required=True, metavar="FILE", help="the users file (created, mode 0600)")
    users.set_defaults(func=run_users, reporting=True)
