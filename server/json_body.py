"""JSON request bodies before FastAPI validates them: ``null`` means "the default", NaN and Infinity are refused.

* Chatchat 0.2.x (FastAPI 0.109, pydantic 1) read ``"field": null`` as "use the default" for every
  optional body field, and its own client sends ``"conversation_id": null`` (``chat_chat``) and
  ``"model_name": null`` (``knowledge_base_chat``). Pydantic 2 refuses null for a ``str`` field, so a
  top-level null is removed from a JSON object body when the route's field has a default and its type
  does not accept None. A field whose None means something else (``max_tokens: int | None = 1024``)
  keeps its null, and a required field sent as null still gets 422.
* JSON has no NaN or Infinity, yet Python's parser reads them (and ``1e309`` as inf). Anywhere in a
  body they are refused with a 422 naming the field, so they cannot slip through a field without
  bounds (``metadata``) into stored data, where they would break the JSON of every later answer.

The body is read when the route asks for it, so the route is known (``scope["route"]``) and the
API-key and size guards outside this middleware have already run.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from itertools import islice
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A body full of NaNs gets a short answer.
MAX_REPORTED_ERRORS = 20
NON_FINITE = "Input should be a finite number"


class JsonBodyMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        await self.app(scope, _normalising_receive(scope, receive), send)


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"content-type":
            media_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return media_type == "application/json" or (
                media_type.startswith("application/") and media_type.endswith("+json")
            )
    return False


def _normalising_receive(scope: Scope, receive: Receive) -> Receive:
    """``receive`` that hands the whole body over at once, normalised; later calls (disconnects) pass through."""
    delivered = False

    async def wrapped() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message  # the client went away mid-body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        delivered = True
        body = normalise_body(b"".join(chunks), scope.get("route"))
        return {"type": "http.request", "body": body, "more_body": False}

    return wrapped


def normalise_body(body: bytes, route: Any) -> bytes:
    """The body to validate: raises a 422 for NaN/Infinity, drops nulls that mean "the default"."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body  # FastAPI answers malformed JSON itself
    errors = list(islice(non_finite_errors(data), MAX_REPORTED_ERRORS))
    if errors:
        # FastAPI passes an HTTPException raised while reading the body on to the handlers.
        raise HTTPException(status_code=422, detail=errors)
    if not isinstance(data, dict):
        return body
    defaults = null_default_keys(route) & {key for key, value in data.items() if value is None}
    if not defaults:
        return body
    kept = {key: value for key, value in data.items() if key not in defaults}
    return json.dumps(kept, ensure_ascii=False).encode()


# ---- NaN and Infinity -----------------------------------------------------------------------------------


def json_token(value: float) -> str:
    """How a non-finite float is written where JSON cannot carry it (the JavaScript/JSON5 spelling)."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def non_finite_errors(data: Any):
    """FastAPI-shaped errors, in document order, for every NaN or infinite number in parsed JSON."""
    stack: list[tuple[tuple, Any]] = [((), data)]  # a loop, not recursion: bodies can nest deeply
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            yield {"type": "finite_number", "loc": ["body", *path], "msg": NON_FINITE, "input": json_token(value)}
        elif isinstance(value, dict):
            stack.extend(reversed([((*path, key), item) for key, item in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([((*path, index), item) for index, item in enumerate(value)]))


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats written as strings, so that it can be sent as JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return json_token(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


# ---- null as the default ----------------------------------------------------------------------------------


def null_default_keys(route: Any) -> frozenset[str]:
    """Top-level body keys of ``route`` where null means the default: optional fields whose type refuses None."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return frozenset()
    params = {param.name: param for param in _body_params(dependant)}
    if len(params) == 1:
        (param,) = params.values()
        if not getattr(param.field_info, "embed", False):
            # A lone body parameter is the whole body: its model's fields are the top-level keys.
            model = param.field_info.annotation
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                return frozenset()
            fields = [(info.alias or name, info) for name, info in model.model_fields.items()]
            return _defaults_refusing_none(fields)
    return _defaults_refusing_none([(param.alias, param.field_info) for param in params.values()])


def _body_params(dependant) -> list:
    params = list(dependant.body_params)
    for sub in dependant.dependencies:
        params += _body_params(sub)
    return params


def _defaults_refusing_none(fields) -> frozenset[str]:
    return frozenset(key for key, info in fields if not info.is_required() and not _accepts_none(info.annotation))


def _accepts_none(annotation: Any) -> bool:
    try:
        return _accepts_none_cached(annotation)
    except TypeError:  # an unhashable annotation: check it without the cache
        return _check_accepts_none(annotation)


@lru_cache(maxsize=512)
def _accepts_none_cached(annotation: Any) -> bool:
    return _check_accepts_none(annotation)


def _check_accepts_none(annotation: Any) -> bool:
    try:
        TypeAdapter(annotation).validate_python(None)
    except ValidationError:
        return False
    except Exception:  # a type pydantic cannot build alone: leave its nulls to the route's own validation
        return True
    return True
