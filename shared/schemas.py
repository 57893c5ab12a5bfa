"""The one base of every request model, and the text and number rules every input keeps.

PostgreSQL cannot store a NUL in text, UTF-8 cannot encode a lone surrogate, and JSON has no NaN or
infinity (Python's `json` reads `NaN`, `Infinity` and `1e400` anyway, as floats that read back as
null); a timestamp whose offset takes it past year 9999 (or before year 1) in UTC cannot be sent to
PostgreSQL at all. Such values are refused where they enter, naming the field, so nothing is stored
that cannot be read back. The same rules hold inside free-form JSON (`dict[str, Any]`, extra fields),
where pydantic's own checks do not reach: there the error's location is the offending nested key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self, TypeVar
from urllib.parse import unquote_to_bytes

from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from starlette.requests import HTTPConnection

from coder.shared.errors import InvalidField, Problem

# JSON numbers beyond 64 bits lose precision in most clients and overflow every integer column.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Free-form JSON nested deeper than this is refused: the stored value is encoded and decoded again
# by recursive code (json, the driver) that must never hit Python's recursion limit on the way back.
MAX_DEPTH = 64

Location = tuple[str | int, ...]
T = TypeVar("T")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored and read back as text, or None when it can."""
    if "\x00" in value:
        return "must not contain a NUL character"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "must be valid UTF-8 (no lone surrogates)"
    return None


def time_problem(value: datetime) -> str | None:
    """Why `value` cannot be stored as a timestamp, or None when it can (year 1 to 9999 in UTC)."""
    if value.tzinfo is None or 1 < value.year < 9999:
        return None  # an offset (under a day) moves a time into another year only from year 1 or 9999
    try:
        value.astimezone(UTC)  # what the driver does on the way in
    except OverflowError:
        return "must be between years 1 and 9999 in UTC"
    return None


def _storable_time(value: datetime | None) -> datetime | None:
    if value is not None and (message := time_problem(value)):
        raise ValueError(message)
    return value


# For datetime query parameters; a body model's datetimes are checked by `Input` itself.
StorableTime = AfterValidator(_storable_time)


def _storable_texts(values: Any) -> bool:
    """Whether `values` are all strings that can be stored: one check of them joined (a text has a
    problem exactly when the joined text has it) instead of one per item, for a request of a
    thousand texts. False when any is not a string: then each item is checked on its own."""
    try:
        joined = "".join(values)
    except TypeError:
        return False
    return text_problem(joined) is None


def _problems(value: Any, at: Location) -> Iterator[tuple[Location, str, Any]]:
    """Every (location, message, value) of `value` that breaks the text or number rules.

    Iterative, so no nesting reaches Python's recursion limit; nested models are skipped: each
    validated itself when it was built."""
    pending: list[tuple[Any, Location]] = [(value, at)]
    while pending:
        value, at = pending.pop()
        if isinstance(value, str):
            if message := text_problem(value):
                yield at, message, value
        elif isinstance(value, bool | BaseModel):
            continue
        elif isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                yield at, "must be a 64-bit integer", value
        elif isinstance(value, datetime):
            if message := time_problem(value):
                yield at, message, value
        elif isinstance(value, float | Decimal):
            if not (value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)):
                yield at, "must be a finite number", value
        elif isinstance(value, dict | list | tuple | set | frozenset) and len(at) > MAX_DEPTH:
            yield at, f"nested deeper than {MAX_DEPTH} levels", None
        elif isinstance(value, dict):
            children = []
            for key, item in value.items():
                if isinstance(key, str) and (message := text_problem(key)):
                    # The location is echoed in the error, which must itself encode as UTF-8.
                    shown = key.encode(errors="backslashreplace").decode()
                    yield (*at, shown), f"key {message}", shown
                else:
                    children.append((item, (*at, key)))
            pending.extend(reversed(children))  # popped in document order
        elif isinstance(value, list | tuple | set | frozenset) and not _storable_texts(value):
            pending.extend(reversed([(item, (*at, index)) for index, item in enumerate(value)]))


def _clean(value: Any) -> bool:
    """Whether nothing in `value` breaks the rules `_problems` checks: the same walk, a level at a time,
    without locations, the strings of a level checked at once. False may also mean "look closer": a
    key that is not a string, a type the walk does not know, a value `_problems` must describe."""
    level, depth = [value], 0
    while level:
        strings: list[str] = []
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str:
                strings.append(item)
            elif kind is dict:
                if depth > MAX_DEPTH:
                    return False
                strings.extend(item)
                below.extend(item.values())
            elif kind is list:
                if depth > MAX_DEPTH:
                    return False
                below.extend(item)
            elif kind is int:
                if not INT_MIN <= item <= INT_MAX:
                    return False
            elif kind is float:
                if not math.isfinite(item):
                    return False
            elif kind is datetime:
                if time_problem(item):
                    return False
            elif item is None or kind is bool or isinstance(item, BaseModel):
                continue
            elif next(_problems(item, (0,) * depth), None) is not None:
                return False  # anything else (subclasses, tuples, sets, decimals): the close look
        try:
            text = "".join(strings)  # a key that is not a string fails here
            if "\x00" in text:
                return False
            text.encode()
        except (TypeError, UnicodeEncodeError):
            return False
        level, depth = below, depth + 1
    return True


def _check(value: Any, title: str) -> None:
    """Raise a ValidationError locating everything in `value` that breaks the text or number rules."""
    if _clean(value):
        return
    errors = [
        InitErrorDetails(type=PydanticCustomError("text_or_number", message), loc=loc, input=problem)
        for loc, message, problem in _problems(value, ())
    ]
    if errors:
        raise ValidationError.from_exception_data(title, errors)


def _storable(value: Any) -> Any:
    _check(value, "storable")
    return value


# The same rules for a value that is not an `Input` model, checked once after pydantic built it: for a
# batch of a thousand items (say a list of TypedDicts), one walk of the whole list rather than a model
# and its check per item.
Storable = AfterValidator(_storable)


class Input(BaseModel):
    """Every request body model: unknown fields refused, every string and number storable."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _storable(self) -> Self:
        # The declared fields' values, and the extra fields: free-form JSON members whose names are
        # keys, checked like any other key.
        fields = self.__dict__ | extra if (extra := self.__pydantic_extra__) else self.__dict__
        _check(fields, type(self).__name__)
        return self


def json_body(adapter: TypeAdapter[T], body: bytes, content_type: str | None = None) -> T:
    """A JSON request body validated by `adapter` as it is parsed: one pass of pydantic's own parser
    rather than Python's `json` and a walk of what it built, for a route whose body is large (a batch).
    Errors are located under `body`, as FastAPI locates them. A body that parser refuses is read again
    by `json`, which names more: the field of a lone surrogate escape, the position of a syntax error;
    it also reads UTF-16 and -32 and a byte order mark. A body sent as another media type than JSON
    (`application/json` or `application/*+json`; none at all reads as JSON, as FastAPI reads it) is
    refused with 415."""
    if content_type is not None:
        media = content_type.partition(";")[0].strip().lower()
        if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
            message = f"the body must be JSON (application/json), not {media or 'an empty media type'}"
            raise Problem(message, status=415, errors=[{"field": "header.content-type", "message": message}])
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        if all(error["type"] != "json_invalid" for error in exc.errors()):
            raise _in_body(exc) from None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        error = {"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([error]) from None
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise _in_body(exc) from None


def _in_body(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])


def inline_schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """`adapter`'s JSON schema with its definitions written where they are used: for an OpenAPI
    operation's own request body (`openapi_extra`), where `#/$defs/...` would not resolve. Non-recursive
    types only."""
    schema = adapter.json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


def _decoded(raw: bytes) -> tuple[str, str | None]:
    """A percent-encoded query component as text, and why it cannot be stored (or None)."""
    data = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return data.decode(errors="replace"), "must be valid UTF-8"
    return text, text_problem(text)


async def storable_parameters(request: HTTPConnection) -> None:
    """The text rules for every query and path parameter of every route (an app-wide dependency; an
    `HTTPConnection`, so WebSocket routes get it too: FastAPI gives them no `Request`). Async though it
    never waits: FastAPI would run a plain function in its thread pool, a thread hop per request.

    Starlette decodes percent-escapes leniently (invalid UTF-8 becomes U+FFFD), so the raw query
    string and path are read here, before any parameter is parsed or reaches a database."""
    for pair in request.scope.get("query_string", b"").split(b"&"):
        raw_name, _, raw_value = pair.partition(b"=")
        name, name_problem = _decoded(raw_name)
        value_problem = _decoded(raw_value)[1]
        if name_problem or value_problem:
            raise InvalidField(
                f"query.{name}", f"{'name' if name_problem else 'value'} {name_problem or value_problem}"
            )
    raw_path = unquote_to_bytes(request.scope.get("raw_path") or b"")
    try:
        raw_path.decode()
        path_valid = True
    except UnicodeDecodeError:
        path_valid = False
    for name, value in request.path_params.items():
        if not isinstance(value, str):
            continue
        problem = text_problem(value)
        if problem is None and not path_valid and "\ufffd" in value:
            problem = "must be valid UTF-8"  # the replacement character stands for the bad bytes
        if problem:
            raise InvalidField(f"path.{name}", problem)
    if not path_valid:
        raise InvalidField("path", "must be valid UTF-8")
