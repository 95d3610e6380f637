"""The OpenAPI document built from the marshmallow schemas, and the pages that show it."""
