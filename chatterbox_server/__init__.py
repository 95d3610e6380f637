"""chatterbox-server: an HTTP server for Chatterbox text-to-speech.

Importing the package is cheap (no Flask, gevent or model runtime), so the gunicorn master and
the model workers can use its plain modules; `create_app` imports the web stack when called.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def create_app(config: dict[str, Any] | None = None):  # noqa: ANN201 - flask is imported lazily
    from chatterbox_server.app import create_app as _create_app
    return _create_app(config)
