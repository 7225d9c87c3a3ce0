"""The FastAPI application of ``fatesam serve``: the lifespan that owns the server's state (:mod:`.service`), the
middleware that checks the token and the upload size (:mod:`.middleware`), the routes (:mod:`.routes`) and the
engine's errors as HTTP answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .. import __version__
from ..errors import FateSAMError, InputError, ResourceError
from .middleware import AccessAndSizeLimit
from .routes import api_router, health_router
from .service import ServerConfig, Service
from .store import TooManySupportSets

__all__ = ["ServerConfig", "Service", "create_app"]

ERROR_STATUS = {TooManySupportSets: 429, InputError: 422, ResourceError: 507}


def create_app(config: ServerConfig) -> FastAPI:
    """The server's application; its lifespan owns the private folder, the warm predictors, the workers and the
    sweeper."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = Service(config)
        try:
            yield
        finally:
            app.state.service.close()

    app = FastAPI(
        title="FateSAM server",
        version=__version__,
        description="Few-shot 3D segmentation with frozen SAM2 (FATE-SAM): upload a support set once, submit jobs.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.add_middleware(
        AccessAndSizeLimit, max_bytes=config.max_upload_bytes, users=config.access, timeout_s=config.upload_timeout_s
    )

    @app.exception_handler(FateSAMError)
    async def engine_error(request: Request, error: FateSAMError) -> JSONResponse:
        status = next((code for kind, code in ERROR_STATUS.items() if isinstance(error, kind)), 400)
        return JSONResponse({"detail": str(error), "kind": type(error).__name__}, status_code=status)

    app.include_router(health_router())
    app.include_router(api_router())
    return app
