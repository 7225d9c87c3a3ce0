"""The server's bearer token: generated once, kept in the user's config folder (mode 0600), compared in constant
time."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from ..errors import InputError

TOKEN_FILE_NAME = "server-token"


def config_folder() -> Path:
    """``$FATESAM_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/fatesam``, else ``~/.config/fatesam``."""
    if os.environ.get("FATESAM_CONFIG_DIR"):
        return Path(os.environ["FATESAM_CONFIG_DIR"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "fatesam"


def load_or_create_token(path: Path | None = None) -> tuple[str, Path, bool]:
    """The token kept in ``path`` (default: the config folder's), created (mode 0600) when missing.

    Returns (token, path, created). A token file readable by others is refused: the token guards patient images.
    """
    path = Path(path) if path is not None else config_folder() / TOKEN_FILE_NAME
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        descriptor = None
    if descriptor is None:
        if os.name != "nt" and path.stat().st_mode & 0o077:
            raise InputError(f"{path} is readable by other users; run 'chmod 600 {path}' and start again.")
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise InputError(f"{path} is empty; delete it to have a new token generated.")
        return token, path, False
    token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(token + "\n")
    return token, path, True


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
