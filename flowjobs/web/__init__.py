"""flowjobs' web process: the HTTP API, the flows UI, webhooks and rq-dashboard in one ASGI app.

``flowjobs.web.app.create_app`` builds it; ``deps`` holds the FastAPI dependencies its routers
share. This package's ``__init__`` imports nothing, so importing one part (``flowjobs.web.dag``,
``flowjobs.web.failures``) does not pull in the client.
"""
