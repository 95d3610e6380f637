"""chatterbox-server: an HTTP server for Chatterbox text-to-speech.

Importing the package is cheap (no Flask, gevent or model runtime), so the gunicorn master and the model
workers can use its plain modules; the app factory is `chatterbox_server.app:create_app`.
"""
__version__ = "0.1.0"
