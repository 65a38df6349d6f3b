"""The generator controls, proxied to the generator's control API (GENERATOR_URL).

  GET  /api/control                     the generator's state
  POST /api/control/burst               a burst (flash sale) now
  POST /api/control/rate  {"rate": n}   change the event rate (the generator validates the bounds)
  POST /api/control/pause | /resume

POSTs must carry `Content-Type: application/json` (a cross-site form cannot, and the dashboard answers no
CORS preflight) and are refused when the browser marks them cross-site (Sec-Fetch-Site, Origin); bodies are
size-limited and malformed JSON is a 400 (services/common/httpguard.py, shared with the generator's own
control API). Unset GENERATOR_URL: 404.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from services.common import httpguard

log = logging.getLogger(__name__)
ACTIONS = ("burst", "rate", "pause", "resume")
TIMEOUT = 3.0


def _error(status: int, error: str, detail: str):
    return jsonify(error=error, detail=detail), status


def _call(base: str, method: str, path: str, body: dict | None = None):
    data = None if method == "GET" else json.dumps(body or {}).encode()
    req = urllib.request.Request(f"{base}{path}", data=data, method=method)  # noqa: S310 - base is GENERATOR_URL
    if data is not None:  # the generator accepts only JSON POSTs
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as response:  # noqa: S310
            status, text = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        log.warning("generator unreachable", extra={"fields": {"path": path, "error": str(exc)[:200]}})
        return _error(502, "Bad Gateway", "the generator's control API is unreachable")
    try:
        answer = json.loads(text)
    except ValueError:
        return _error(502, "Bad Gateway", "the generator answered something that is not JSON")
    if not isinstance(answer, dict):
        return _error(502, "Bad Gateway", "unexpected answer from the generator")
    return jsonify(answer), status


def controls_blueprint() -> Blueprint:
    bp = Blueprint("controls", __name__)

    @bp.before_request
    def guard():
        if current_app.config["DASHBOARD"].generator_url is None:
            return _error(404, "Not Found", "generator controls are disabled (GENERATOR_URL is not set)")
        if request.method == "POST":
            try:
                httpguard.refuse_cross_site()
                httpguard.require_json()
                httpguard.read_json()
            except HTTPException as exc:
                return _error(exc.code, exc.name, exc.description)
        return None

    @bp.get("/api/control")
    def state():
        return _call(current_app.config["DASHBOARD"].generator_url, "GET", "/control")

    @bp.post("/api/control/<action>")
    def act(action: str):
        if action not in ACTIONS:
            return _error(404, "Not Found", f"unknown action; use one of: {', '.join(ACTIONS)}")
        body = None
        if action == "rate":
            payload = httpguard.read_json()
            value = payload.get("rate") if isinstance(payload, dict) else None
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                return _error(400, "Bad Request", 'expected {"rate": n} with a number n > 0 (events per second)')
            body = {"rate": value}
        return _call(current_app.config["DASHBOARD"].generator_url, "POST", f"/control/{action}", body)

    return bp
