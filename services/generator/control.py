"""The control API (a Flask blueprint mounted on the ops server next to /healthz, /readyz, /metrics).

  GET  /control          200  the generator's state (JSON)
  POST /control/burst    202  queues a burst for the next tick
  POST /control/rate     200  body {"rate": n}, 0 < n <= GENERATOR_MAX_RATE; 400 with a JSON error otherwise
  POST /control/pause    200  stops generating: regular events, automatic bursts, slow changes (idempotent);
                              a burst requested while paused is still written
  POST /control/resume   200  resumes (idempotent)
Errors are JSON objects {"error": ..., "detail": ...}; wrong methods get 405 from the ops app.

Every POST must carry `Content-Type: application/json` (415 otherwise; the body may be empty except for
/control/rate) and is refused (403) when a browser marks it cross-site (Sec-Fetch-Site, Origin): a web page
cannot drive a generator published on localhost. Bodies are limited to 16 KiB (413); malformed or pathological
JSON is a 400 (services/common/httpguard.py).
"""

from __future__ import annotations

import math

from flask import Blueprint, jsonify, request

from services.common import httpguard
from services.generator.engine import Engine


def _bad_request(detail: str):
    return jsonify(error="Bad Request", detail=detail), 400


def control_blueprint(engine: Engine) -> Blueprint:
    bp = Blueprint("control", __name__)

    @bp.before_request
    def guard():
        if request.method == "POST":
            httpguard.refuse_cross_site()
            httpguard.require_json()
            httpguard.read_json()  # any body must be well-formed JSON within the limits
        return None

    @bp.get("/control")
    def state():
        return jsonify(engine.status())

    @bp.post("/control/burst")
    def burst():
        pending = engine.request_burst()
        return jsonify(queued=True, bursts_pending=pending), 202

    @bp.post("/control/rate")
    def rate():
        body = httpguard.read_json()
        if not isinstance(body, dict):
            return _bad_request('expected a JSON object like {"rate": 50}')
        if "rate" not in body:
            return _bad_request('missing field "rate"')
        value = body["rate"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _bad_request('"rate" must be a number (events per second)')
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not (0 < value <= engine.config.max_rate):  # also rejects NaN and infinities
            return _bad_request(f'"rate" must be > 0 and <= {engine.config.max_rate:g} (GENERATOR_MAX_RATE)')
        engine.set_rate(value)
        return jsonify(rate=engine.rate)

    @bp.post("/control/pause")
    def pause():
        engine.pause()
        return jsonify(paused=True)

    @bp.post("/control/resume")
    def resume():
        engine.resume()
        return jsonify(paused=False)

    return bp
