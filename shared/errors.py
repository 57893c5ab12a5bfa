"""RFC 9457 problem details: the one error shape of every target.

Domain code raises a `Problem` (or a subclass); request validation, HTTP errors and crashes are
mapped here, in one place, so every 4xx/5xx is `application/problem+json` with a stable `type`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

PROBLEM_BASE = "https://coderide.io/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class Problem(Exception):
    """An error a client can act on. Subclass per domain error, or raise with arguments.

    Raised during a request, it rolls the request's transaction back, unless `commit` is true: then
    the work done so far (an audit row, an outbox event telling of the refusal) commits first, and the
    answer is the problem all the same (shared.db's session dependency does this)."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"
    commit: bool = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        status: int | None = None,
        slug: str | None = None,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        commit: bool | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        if commit is not None:
            self.commit = commit
        self.detail = detail
        self.status = status or self.status
        self.slug = slug or self.slug
        self.title = title or self.title
        self.errors = errors
        self.headers = headers
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": PROBLEM_BASE + self.slug, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extensions)
        return body


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Permission denied"


class InvalidField(Problem):
    """Input that passed the schema but breaks a rule; names the offending field."""

    status, slug, title = 422, "validation", "Invalid input"

    def __init__(self, field: str, message: str, **kwargs: Any) -> None:
        super().__init__(f"{field}: {message}", errors=[{"field": field, "message": message}], **kwargs)


class Unavailable(Problem):
    status, slug, title = 503, "unavailable", "Service unavailable"


_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Permission denied"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
    502: ("bad-gateway", "Bad gateway"),
    503: ("unavailable", "Service unavailable"),
    504: ("gateway-timeout", "Gateway timeout"),
}


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem.body(instance),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def field_errors(exc: RequestValidationError | ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as `{field, message}` with dotted field paths (`body.` and `query.` kept)."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]),
            "message": error["msg"],
            "code": error["type"],
        }
        for error in exc.errors()
    ]


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError | ValidationError)
        errors = field_errors(exc)
        fields = ", ".join(e["field"] for e in errors)
        return problem_response(
            Problem(
                f"Invalid input: {fields}",
                status=422,
                slug="validation",
                title="Invalid input",
                errors=errors,
            ),
            request,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem_response(
            Problem(
                detail,
                status=exc.status_code,
                slug=slug,
                title=title,
                headers=dict(exc.headers) if exc.headers else None,
            ),
            request,
        )

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(Problem(status=500, slug="internal", title="Internal server error"), request)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


# --- the OpenAPI side: every operation documents the problems it can answer ---


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending input, e.g. `body.name` or `query.limit`")
    message: str
    code: str | None = Field(default=None, description="Machine-readable reason, e.g. `string_too_long`")


class ProblemDocument(BaseModel):
    """RFC 9457 problem details, as every 4xx and 5xx answer of the platform is shaped."""

    model_config = ConfigDict(title="Problem", extra="allow")

    type: str = Field(description="A URI naming the kind of problem", examples=[PROBLEM_BASE + "not-found"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path")
    errors: list[FieldError] | None = Field(default=None, description="One entry per offending field")


_REF = "#/components/schemas/"
_PROBLEMS_ATTRIBUTE = "__problems__"
_DESCRIPTIONS = {
    400: "Malformed input: a body that is not well-formed, or a cursor this API did not return",
    401: "No valid bearer token",
    403: "The token lacks a permission this operation needs",
    404: "Nothing with this id, or not visible to the caller",
    409: "Conflicts with the current state",
    413: "The request body is too large",
    422: "Invalid input; `errors` names each field",
    429: "Too many requests; `Retry-After` says when to come back",
    503: "A data store this operation needs is unavailable",
}


def answers(*statuses: int) -> Callable[[F], F]:
    """Declares the problem statuses a dependency can answer, so every route that depends on it
    documents them (a token check answers 401, a permission check 403...)."""

    def mark(call: F) -> F:
        setattr(call, _PROBLEMS_ATTRIBUTE, frozenset(statuses))
        return call

    return mark


def _calls(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _calls(sub)


def route_problems(route: APIRoute | RouteContext, always: Iterable[int] = ()) -> set[int]:
    """The problem statuses `route` can answer, derived from what it depends on and takes."""
    statuses = set(always)
    dependants = list(_calls(route.dependant))
    for dependant in dependants:
        statuses |= getattr(dependant.call, _PROBLEMS_ATTRIBUTE, frozenset())
    params = [p for d in dependants for p in (*d.path_params, *d.query_params, *d.header_params)]
    body = any(d.body_params for d in dependants)
    if params or body:
        statuses.add(422)
    if any(d.path_params for d in dependants):
        statuses.add(404)
    if body:
        statuses |= {400, 413}
    return statuses


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _REF + "Problem"}}}


def problem_responses(statuses: Iterable[int]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for `statuses`, each a problem (for a route's `responses=`)."""
    return {
        str(status): {"description": _DESCRIPTIONS.get(status, "Problem"), "content": _problem_content()}
        for status in sorted(statuses)
    }


def _drop_unreferenced(document: dict[str, Any], names: Iterable[str]) -> None:
    schemas = document.get("components", {}).get("schemas", {})
    for name in names:
        if name in schemas and f'"{_REF}{name}"' not in json.dumps(document):
            del schemas[name]


def document_problems(document: dict[str, Any], routes: Iterable[BaseRoute], always: Iterable[int]) -> None:
    """Adds each route's problem answers to its operation in `document`, all `application/problem+json`
    with the shared `Problem` schema; replaces FastAPI's 422 (`HTTPValidationError` as
    `application/json`), which is not what the platform answers."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = ProblemDocument.model_json_schema(ref_template=_REF + "{model}")
    schemas.update(schemas["Problem"].pop("$defs", {}))
    paths = document.get("paths", {})
    for route in iter_route_contexts(list(routes)):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        item = paths.get(route.path_format, {})
        for method in route.methods or ():
            operation = item.get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for code, response in problem_responses(route_problems(route, always)).items():
                responses.setdefault(str(code), response)
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = _problem_content()
                    if not response.get("description") or response["description"] == "Validation Error":
                        response["description"] = _DESCRIPTIONS.get(int(code), "Problem")
    _drop_unreferenced(document, ["HTTPValidationError", "ValidationError"])


def install_problem_openapi(app: FastAPI, always: Iterable[int] = ()) -> None:
    """`app.openapi()` documents the problems of every operation (see `document_problems`); `always`
    are statuses any operation can answer (the gateway's rate limits)."""
    generate = app.openapi
    always = frozenset(always)
    documented: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        # FastAPI caches its document, and makes a new one when routes were added since.
        document = generate()
        if not documented or documented[0] is not document:
            document_problems(document, app.routes, always)
            documented[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
