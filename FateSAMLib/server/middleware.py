"""ASGI middleware of the server: who is asking (the token names the user) and how much they may send, both decided
before any byte of a request's body is read."""

from __future__ import annotations

import asyncio
import time

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..protocol import API
from .limits import SECONDS_PER_UPLOADED_MB
from .users import Users

USER_KEY = "fatesam_user"
"""Where the request's state holds the name of the user its token belongs to."""


def unauthorized() -> JSONResponse:
    """The answer to a request without a valid token."""
    return JSONResponse(
        {"detail": "A valid token is needed: send the header 'Authorization: Bearer TOKEN'."},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


class AccessAndSizeLimit:
    """Refuse a request under ``/v1`` (but ``/v1/health``) without a user's token before its body is read (401), one
    whose body is over ``max_bytes``, as declared or while it streams (413), and cut one whose body arrives slower
    than ``timeout_s`` plus :data:`SECONDS_PER_UPLOADED_MB` per MB received (408), so that no client holds the
    server; the user's name goes into the request's state."""

    def __init__(self, app: ASGIApp, max_bytes: int, users: Users, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.users = users
        self.timeout_s = timeout_s

    def _too_slow(self) -> str:
        return (
            f"The upload stalled or arrived too slowly (this server allows {self.timeout_s:g} s plus "
            f"{SECONDS_PER_UPLOADED_MB:g} s per MB); nothing of it was kept. Check the network, and send it again."
        )

    def _too_large(self) -> str:
        return (
            f"The upload is over this server's limit of {self.max_bytes / 1024**2:g} MB; nothing of it was kept. "
            "Crop the volume, or ask the server's administrator to raise --max-upload-mb."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        if scope["path"].startswith(f"{API}/") and scope["path"] != f"{API}/health":
            scheme, _, given = headers.get("authorization", "").partition(" ")
            user = self.users.user_of(given.strip() if scheme.lower() == "bearer" else None)
            if user is None:
                return await unauthorized()(scope, receive, send)
            scope.setdefault("state", {})[USER_KEY] = user
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"detail": self._too_large()}, status_code=413)(scope, receive, send)
        received = 0
        started = time.monotonic()
        body_done = False

        async def limited() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls wait for the client to disconnect (while a response streams): unbounded
                return await receive()
            deadline = started + self.timeout_s + received / 1024**2 * SECONDS_PER_UPLOADED_MB
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise HTTPException(408, self._too_slow(), headers={"Connection": "close"}) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited, send)
