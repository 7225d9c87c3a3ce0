"""ASGI middleware of the server: who is asking (the token names the user) and how much they may send, both decided
before any byte of a request's body is read."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..protocol import API
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
    """Refuse a request under ``/v1`` (but ``/v1/health``) without a user's token (401), and one whose body is over
    ``max_bytes``, as declared or while it streams (413); the user's name goes into the request's state."""

    def __init__(self, app: ASGIApp, max_bytes: int, users: Users) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.users = users

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

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited, send)
