"""The server's limits and their defaults, without FastAPI: ``fatesam serve`` states them in its options' help."""

DEFAULT_MAX_VOXELS = 512 * 512 * 2000
"""The most voxels an uploaded volume may hold by default (``--max-voxels``): a CT of 2000 slices of 512 x 512."""
DEFAULT_UPLOAD_TIMEOUT_S = 60.0
"""How long a request body may take (``--upload-timeout-seconds``), plus :data:`SECONDS_PER_UPLOADED_MB`."""
SECONDS_PER_UPLOADED_MB = 10.0
"""How much longer a request body may take per MB it brought: an upload slower than 100 KB/s is cut (HTTP 408)."""
SHUTDOWN_GRACE_S = 3
"""After SIGTERM or Ctrl+C, requests still running this long are cut, whatever their clients do."""
