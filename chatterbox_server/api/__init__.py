"""Blueprints by resource, one module each (the flat api_*.py modules predate this package)."""
