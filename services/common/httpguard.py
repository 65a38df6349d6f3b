"""Request hardening shared by every HTTP service (the ops servers, the generator's control API, the dashboard).

- `install_limits(app)`: a body size limit on every endpoint (`MAX_BODY_BYTES`, 16 KiB: the largest body any
  endpoint takes is `{"rate": n}`). A declared Content-Length above it is refused before anything is read
  (413); a chunked body is cut off when it passes the limit (werkzeug's `max_content_length`).
- `refuse_cross_site()`: a state-changing request must be same-origin. Browsers mark every request with
  `Sec-Fetch-Site`; a request marked anything but `same-origin` or `none` (typed in the address bar) is refused,
  and so is one whose `Origin` is not the host it was sent to (for browsers without Fetch metadata). A request
  with neither header (curl, the dashboard's server-side proxy) is not a browser's and passes.
- `require_json()`: only `Content-Type: application/json`. An HTML form or a "simple" cross-site fetch cannot
  send that type without a CORS preflight, and no service answers a preflight with Access-Control-Allow-*.
- `read_json()`: the body as JSON, or a 400 with a JSON error for anything malformed or pathological: more
  than `MAX_JSON_DEPTH` levels of nesting (a 100,000-deep array used to raise RecursionError), integers of more
  than `MAX_INT_DIGITS` digits, NaN/Infinity literals, non-UTF-8 text, a broken chunked encoding.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

MAX_BODY_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 32
SAME_SITE = ("same-origin", "none")


class BadJson(ValueError):
    """The body is not JSON we accept; the message says why (it goes back to the client)."""


def install_limits(app: Flask, max_body: int = MAX_BODY_BYTES) -> None:
    app.config["MAX_CONTENT_LENGTH"] = max_body

    @app.before_request
    def _limit_body():
        if request.content_length is not None and request.content_length >= max_body:
            abort(413, description=f"request bodies are limited to {max_body} bytes")
        return None


def cross_site_reason() -> str | None:
    """Why the current request looks cross-site, or None when it does not."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in SAME_SITE:
        return "cross-site requests are not accepted"
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin.strip())
        if origin.strip() == "null" or parts.netloc.lower() != (request.host or "").lower():
            return "cross-origin requests are not accepted"
    return None


def refuse_cross_site():
    """403 for a cross-site request (see the module doc), else None: use in a before_request hook."""
    reason = cross_site_reason()
    if reason is not None:
        abort(403, description=reason)


def require_json():
    """415 unless the request says Content-Type: application/json."""
    if request.mimetype != "application/json":
        abort(415, description="send Content-Type: application/json")


def _check_depth(text: str, limit: int) -> None:
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise BadJson(f"JSON nested deeper than {limit} levels")
        elif char in "]}":
            depth -= 1


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadJson(f"a number with more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadJson("a number too large to represent")
    return value


def _parse_constant(name: str):
    raise BadJson(f"{name} is not valid JSON")


def loads(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH):
    """json.loads with the limits above; raises BadJson with a short reason."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise BadJson("the body is not UTF-8 text") from None
    _check_depth(text, max_depth)
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except BadJson:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadJson(f"the body is not valid JSON ({exc.__class__.__name__})") from None


def _body() -> bytes:
    """The request body, read once (then kept on flask.g) and never more than the limit: a chunked body
    has no Content-Length to refuse up front, so the limit is enforced while reading."""
    if "_httpguard_body" in g:
        return g._httpguard_body
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or MAX_BODY_BYTES
    try:
        # request.stream stops at MAX_CONTENT_LENGTH (werkzeug's LimitedStream with is_max), for a chunked
        # body as well: a body that reaches the limit is treated as over it.
        data = request.stream.read()
    except RequestEntityTooLarge:
        abort(413, description=f"request bodies are limited to {limit} bytes")
    except HTTPException:
        raise
    except (OSError, ValueError):  # a broken chunked encoding or a client that went away mid-body
        abort(400, description="the request body could not be read (bad chunked encoding?)")
    if len(data) >= limit:
        abort(413, description=f"request bodies are limited to {limit} bytes")
    g._httpguard_body = data
    return data


def read_json(*, empty=None):
    """The request body parsed by `loads`, `empty` for an empty body; abort(400) with the reason otherwise.
    A body past the size limit is a 413."""
    data = _body()
    if not data.strip():
        return empty
    try:
        return loads(data)
    except BadJson as exc:
        abort(400, description=str(exc))
