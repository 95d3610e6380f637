"""API keys: one from CHATTERBOX_API_KEY, any number of named ones from CHATTERBOX_API_KEYS_FILE.

The keys file has one `name:key` a line (`#` starts a comment); the word `admin` after the key
(`name:key admin`) marks an admin key, which sees and acts on every key's workspace (history,
outputs, long jobs, VC inputs, voices) and the server's PIDs and error texts. Every other key has
its own workspace, named by the key's name. The single CHATTERBOX_API_KEY (named "default") is an
admin key: it is the operator's. Create a key, or add one to the file, with
    python -m chatterbox_server.security.keys create NAME [--admin] --file /etc/chatterbox-server/api-keys
which prints the new key once. A keys file that is named but missing, unreadable or empty stops
the server from starting: a typo must never open the server to everyone. No Flask here.
"""
from __future__ import annotations

import argparse
import hmac
import os
import re
import secrets
import shutil
import sys
from contextvars import ContextVar
from dataclasses import dataclass

KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
KEY_PREFIX = "cbx-"
FLAGS = ("admin",)
# The API key name of the request being served (None without keys): set by security/guards.py, so
# /v1/status can show a request's text to the key that sent it and to nobody else.
REQUEST_OWNER: ContextVar[str | None] = ContextVar("request_owner", default=None)


class KeysFileError(ValueError):
    """The keys file cannot be used."""


@dataclass(frozen=True)
class KeyEntry:
    name: str
    secret: bytes
    admin: bool = False


@dataclass(frozen=True)
class ApiKeys:
    keys: tuple[tuple[str, bytes], ...] = ()     # (name, secret)
    admins: frozenset[str] = frozenset()         # names of the admin keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def is_admin(self, name: str | None) -> bool:
        return name is not None and name in self.admins

    def identify(self, sent: str) -> str | None:
        """The name of the key `sent`, or None. Compares with every key in constant time."""
        found = None
        candidate = sent.encode()
        for name, secret in self.keys:
            if hmac.compare_digest(candidate, secret) and found is None:
                found = name
        return found

    @classmethod
    def load(cls, single_key: str = "", keys_file: str = "") -> ApiKeys:
        entries = [KeyEntry("default", single_key.encode(), admin=True)] if single_key else []
        if keys_file:
            entries.extend(read_keys_file(keys_file))
        return cls(tuple((entry.name, entry.secret) for entry in entries),
                   frozenset(entry.name for entry in entries if entry.admin))


def parse_keys(text: str, source: str = "keys file") -> list[KeyEntry]:
    keys: list[KeyEntry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, rest = line.partition(":")
        secret, *flags = rest.split() or [""]   # two keys of one name share a workspace (rotation)
        name = name.strip()
        if not separator or not KEY_NAME.fullmatch(name) or len(secret) < 16:
            raise KeysFileError(f"{source} line {number}: expected `name:key` with a key of at least 16 characters")
        unknown = [flag for flag in flags if flag not in FLAGS]
        if unknown or len(flags) > len(set(flags)):
            raise KeysFileError(f"{source} line {number}: after the key only the word `admin` may follow, "
                                f"got {' '.join(flags)!r} (a key holds no spaces)")
        keys.append(KeyEntry(name, secret.encode(), admin="admin" in flags))
    if not keys:
        raise KeysFileError(f"{source} holds no key")
    return keys


def read_keys_file(path: str) -> list[KeyEntry]:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_keys(f.read(), path)
    except OSError as exc:
        raise KeysFileError(f"cannot read the API keys file {path}: {exc.strerror}") from None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def append_key(path: str, name: str, group: str = "", admin: bool = False) -> str:
    """Add a fresh key named `name` to the keys file (mode 0600, or 0640 owned by `group` so the
    service user can read it); returns the key."""
    if not KEY_NAME.fullmatch(name):
        raise KeysFileError(f"{name!r}: key names are letters, digits, '_', '.', '@' or '-'")
    if os.path.exists(path) and any(entry.name == name for entry in read_keys_file(path)):
        raise KeysFileError(f"{path} already has a key named {name!r}")
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(f"{name}:{key}{' admin' if admin else ''}\n")
    if group:
        shutil.chown(path, group=group)
        os.chmod(path, 0o640)
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatterbox_server.security.keys",
                                     description="Create API keys for chatterbox-server.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="add a key to the keys file and print it")
    create.add_argument("name", help="who uses the key (shown in logs and limits)")
    create.add_argument("--file", default=os.environ.get("CHATTERBOX_API_KEYS_FILE", ""),
                        help="the keys file (default: $CHATTERBOX_API_KEYS_FILE)")
    create.add_argument("--group", default="", help="make the file readable by this group (the service's)")
    create.add_argument("--admin", action="store_true",
                        help="an admin key: sees and acts on every key's workspace, PIDs and error texts")
    args = parser.parse_args(argv)
    if not args.file:
        parser.error("name the keys file with --file or CHATTERBOX_API_KEYS_FILE")
    try:
        print(append_key(args.file, args.name, args.group, args.admin))
    except (KeysFileError, LookupError, PermissionError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
