"""The core: what a flow, a run and a schedule are, and every decision about them that needs no I/O.

Manifests and records, statuses, the planner, retries, polling, When-clause expressions, flow
files (the registry and its validation), cron and schedule states, background job calls and their
ids, Redis key names and webhook signature schemes. Nothing here imports redis, rq, a web framework
or a command-line library (``[tool.importlinter]`` in ``pyproject.toml`` checks it), so every rule
is tested without a server.
"""
