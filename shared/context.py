"""What the current request carries onwards: its id and the caller's token (trace context is OTel's).

Only what calls onwards reads them: the service clients (shared/http.py) forward both and trade the
token for a workload token. Who the caller is, an app reads from the request's own Authorization
header (shared/auth.py `bearer_token`), never from here.

`acting_org` is set by work that runs with no user request (an event handler, a background task):
its calls to another target carry the caller's workload token for that organization alone.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
bearer_token: ContextVar[str | None] = ContextVar("bearer_token", default=None)
acting_org: ContextVar[str | None] = ContextVar("acting_org", default=None)
