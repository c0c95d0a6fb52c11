"""A small Flask API wrapped in chaos in one line (README, "Wrap your own app"); the
README's Quick start serves the built-in mock API, not this. Run it from the repository:

    gunicorn --chdir examples/flask_app -k gthread --threads 8 -b 127.0.0.1:3000 app:app
    cd examples/flask_app && mockforge serve --app app:app   # serve's chaos instead of this one

Chaos comes from ``chaos.yaml`` beside this file (or ``MOCKFORGE_CONFIG``), then
``MOCKFORGE_CHAOS_*`` environment variables.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Response, jsonify, request

from mockforge_wsgi import load_config
from mockforge_wsgi.middleware import ChaosMiddleware

app = Flask(__name__)


@app.get("/health")
def health() -> Response:
    return jsonify(status="ok")


@app.get("/api/test")
def api_test() -> Response:
    return jsonify(message="Hello from the example app", chaos=request.headers.get("X-Chaos"))


@app.post("/api/echo")
def echo() -> Response:
    return jsonify(received=request.get_json(silent=True), length=request.content_length or 0)


@app.get("/api/bytes/<int:n>")
def some_bytes(n: int) -> Response:
    """Streams ``n`` bytes in 16 KiB chunks (for bandwidth and partial-response tests)."""

    def chunks():  # type: ignore[no-untyped-def]
        left = n
        while left > 0:
            size = min(left, 16384)
            left -= size
            yield b"x" * size

    return Response(chunks(), mimetype="application/octet-stream", headers={"Content-Length": n})


config_path = os.environ.get("MOCKFORGE_CONFIG") or Path(__file__).with_name("chaos.yaml")
app.wsgi_app = ChaosMiddleware(app.wsgi_app, config=load_config(config_path))  # type: ignore[method-assign]
