"""The users of a server: named, each with a token that is shown once and stored only as its SHA-256 (in a users
file of mode 0600), or the one token of a one-person server. A request's token names its user; a job, its files and
its result belong to that user."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..atomic import temporary_sibling
from ..errors import InputError
from ..json_input import parse_json

SINGLE_USER = "default"
"""The user of a server with one token (or none, on 127.0.0.1 with ``--no-auth``)."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def token_digest(token: str) -> str:
    """The SHA-256 of a token, as hex: what a users file keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Users:
    """Who may use the server: user name -> token digest. Empty for a server without tokens (``--no-auth``)."""

    digests: dict[str, str]

    @classmethod
    def single(cls, token: str | None) -> Users:
        """One user, :data:`SINGLE_USER`, with ``token`` (None: no token needed)."""
        return cls({} if token is None else {SINGLE_USER: token_digest(token)})

    @classmethod
    def read(cls, path: Path) -> Users:
        """The users in ``path``; InputError when it is missing, readable by others, malformed or has no user."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path} does not exist; add a user with 'fatesam users add NAME --users {path}'.")
        if os.name != "nt" and path.stat().st_mode & 0o077:
            raise InputError(f"{path} is readable by other users; run 'chmod 600 {path}' and start again.")
        users = _read_digests(path)
        if not users:
            raise InputError(f"{path} has no user; add one with 'fatesam users add NAME --users {path}'.")
        return cls(users)

    @property
    def open(self) -> bool:
        """Whether requests need no token (``--no-auth``)."""
        return not self.digests

    def user_of(self, token: str | None) -> str | None:
        """The user whose token this is (compared in constant time with every user's), or None."""
        if self.open:
            return SINGLE_USER
        if not token:
            return None
        digest = token_digest(token)
        found = None
        for name, expected in self.digests.items():
            if hmac.compare_digest(digest, expected):
                found = name
        return found


def _read_digests(path: Path) -> dict[str, str]:
    fix = "make a new one with 'fatesam users add'."
    data = parse_json(path, f"The users file {path}", fix)
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("token_sha256"), str) for entry in users.values()
    ):
        raise InputError(f"{path} is not a FateSAM users file (no 'users' object of token digests); {fix}")
    return {name: entry["token_sha256"] for name, entry in users.items()}


def add_user(path: Path, name: str) -> str:
    """Add user ``name`` to the users file ``path`` (created, mode 0600) with a new token; returns the token, which is
    stored only as its digest (show it once). InputError for a bad or taken name."""
    path = Path(path)
    if not _NAME.fullmatch(name):
        raise InputError(f"'{name}' is not a user name: use letters, digits, '.', '_' or '-' (at most 64).")
    users = _read_digests(path) if path.exists() else {}
    if name in users:
        raise InputError(f"{path} has a user '{name}' already; choose another name.")
    token = secrets.token_urlsafe(32)
    users[name] = token_digest(token)
    text = json.dumps({"users": {user: {"token_sha256": digest} for user, digest in users.items()}}, indent=2)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as out:
            out.write(text + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return token
