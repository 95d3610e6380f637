"""What an error may tell a client: never a server path, never the text of an exception that the
server did not word for clients. No Flask or gevent here."""
from __future__ import annotations

import re

# an absolute path: "/" then at least one more "/"-separated part, or a Windows drive path
_PATH = re.compile(r"(?<![\w.:/])(?:/[\w.@+-]+){2,}/?|\b[A-Za-z]:\\[^\s'\"]+")
ENGINE_FAILURE = "synthesis failed on the model worker; the server log has the details"


def scrub(text: str) -> str:
    """`text` with every absolute path replaced by `<path>`."""
    return _PATH.sub("<path>", text)


def public_pool_message(message: str, status: int, code: str) -> str:
    """A model-side failure as the client sees it: an unexpected engine exception says only that it
    happened (its text goes to the log); messages worded for clients keep their words, minus paths."""
    if status >= 500 and code == "synthesis_failed":
        return ENGINE_FAILURE
    return scrub(message)
