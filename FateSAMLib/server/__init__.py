"""``fatesam serve``: the engine behind an HTTP API (FastAPI + uvicorn, the ``fatesam[server]`` extra).

Jobs run ``fatesam segment`` itself (``cli.main``) in worker threads, on files the server names in its private
folder, refines (corrections) included; support sets are stored once by content hash, and the encoded features of
supports and queries cached by content (a refine of a query the server has seen encodes nothing), private and
expiring with the results. May import everything below it (``cli``, ``method``, ``io``, the top level); FastAPI and
uvicorn are imported only here.
"""
