"""``fatesam serve``: the engine behind an HTTP API (FastAPI + uvicorn, the ``fatesam[server]`` extra).

Jobs run ``fatesam segment`` itself (``cli.main``) in worker threads, on files the server names in its private
folder; support sets are stored once by content hash, and their encoded features cached. May import everything
below it (``cli``, ``method``, ``io``, the top level); FastAPI and uvicorn are imported only here.
"""
