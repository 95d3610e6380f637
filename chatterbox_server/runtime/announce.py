"""The line `make run` prints once the server can speak: where the web app is. No I/O here."""
from __future__ import annotations


def urls(bind_addresses: list[str]) -> list[str]:
    """A browser URL for each TCP bind address (unix sockets have none); a wildcard address is
    shown as 127.0.0.1, which reaches it from this machine."""
    found = []
    for address in bind_addresses:
        if address.startswith(("unix:", "fd://")):
            continue
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        found.append(f"http://{shown}:{port}/")
    return found


def ready_line(engine: str, model: str, bind_addresses: list[str]) -> str:
    where = urls(bind_addresses)
    if not where:
        return f"chatterbox-server is ready ({engine}, {model}) on {', '.join(bind_addresses)}"
    return (f"chatterbox-server is ready ({engine}, {model}): open the web app at {where[0]}"
            + (f" (also {', '.join(where[1:])})" if where[1:] else "") + f", API docs at {where[0]}docs")
