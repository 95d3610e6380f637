"""The one resolver of client-named paths under DATA_DIR.

A client names files and folders as relative paths like `project/chapter1/take.wav`. Each segment
is checked on its own (ASCII letters, digits, space, `_`, `.`, `-`; no leading dot, so no `..`, no
hidden files), so a backslash, a NUL byte, an absolute path, a Unicode look-alike of `/` or `.`, or
a direction mark never reaches the file system. `confine` then joins the clean path to its root
and refuses symlinks on the way, so even a link planted inside the store cannot lead out of it.
"""
from __future__ import annotations

import os
import re

from chatterbox_server.errors import ApiError

SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}")
MAX_DEPTH = 8


class PathError(ApiError):
    """A client-supplied path that is not a plain relative path inside its store (a 400)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(400, f"{param}: {message}", param=param, code="invalid_path")


def clean_relative(value: str | None, param: str, *, allow_empty: bool = True) -> str:
    """`value` as a normalised relative path ("a/b"), "" for none; PathError for anything else."""
    if value is None or value.strip() == "":
        if allow_empty:
            return ""
        raise PathError(param, "must not be empty")
    if "\x00" in value:
        raise PathError(param, "contains a NUL byte")
    if "\\" in value:
        raise PathError(param, "contains a backslash; separate folders with '/'")
    if not value.isascii():
        raise PathError(param, "use ASCII letters, digits, space, '_', '.' and '-' only")
    if value.startswith("/"):
        raise PathError(param, "must be a relative path, not an absolute one")
    parts = value.strip().rstrip("/").split("/")
    if len(parts) > MAX_DEPTH:
        raise PathError(param, f"is nested deeper than {MAX_DEPTH} folders")
    for part in parts:
        if part in ("", ".", ".."):
            raise PathError(param, f"has an empty, '.' or '..' segment ({value!r})")
        if not SEGMENT.fullmatch(part) or part.endswith((" ", ".")):
            raise PathError(param, f"segment {part!r} must start with a letter or digit, use letters, digits, "
                                   "space, '_', '.' or '-', and not end with a space or dot")
    return "/".join(parts)


def split(relative: str) -> tuple[str, str]:
    """("folder/sub", "name") of a clean relative path; the folder is "" at the top."""
    folder, _, name = relative.rpartition("/")
    return folder, name


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def confine(root: str, relative: str, param: str) -> str:
    """The absolute path of clean `relative` under `root`. PathError when an existing component is a
    symlink or the result is not inside the real root (the root itself may be a link)."""
    base = os.path.realpath(root)
    path = base
    for part in relative.split("/") if relative else ():
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise PathError(param, "names a symbolic link, which the store never follows")
    if os.path.commonpath([base, os.path.abspath(path)]) != base:
        raise PathError(param, "leads outside its store")
    return path


def resolve(root: str, value: str | None, param: str, *, allow_empty: bool = True) -> tuple[str, str]:
    """(clean relative path, absolute path) of a client-supplied path under `root`."""
    relative = clean_relative(value, param, allow_empty=allow_empty)
    return relative, confine(root, relative, param)


def walk_files(root: str) -> list[tuple[str, str]]:
    """(folder, file name) of every regular file under `root`, in sorted order. Hidden entries,
    symlinks and folders whose names a client could not have made are skipped."""
    found: list[tuple[str, str]] = []
    base = os.path.realpath(root)
    for directory, folders, files in os.walk(base, followlinks=False):
        folders[:] = sorted(name for name in folders if SEGMENT.fullmatch(name)
                            and not os.path.islink(os.path.join(directory, name)))
        folder = os.path.relpath(directory, base).replace(os.sep, "/")
        folder = "" if folder == "." else folder
        for name in sorted(files):
            if name.startswith(".") or not SEGMENT.fullmatch(name):
                continue
            if os.path.isfile(os.path.join(directory, name)) and not os.path.islink(os.path.join(directory, name)):
                found.append((folder, name))
    return found


def folder_tree(root: str, counted: list[str], only_leading_to: bool = False) -> dict:
    """The folders under `root` with how many of `counted` (clean relative file paths) each holds
    directly, in the Extended API's VoiceFoldersResponse shape. `only_leading_to`: just the folders
    on the way to one of `counted` (a key's own workspace: another key's folder names stay hidden)."""
    base = os.path.realpath(root)
    folders: dict[str, dict] = {}
    for directory, names, _ in os.walk(base, followlinks=False):
        names[:] = sorted(name for name in names if SEGMENT.fullmatch(name)
                          and not os.path.islink(os.path.join(directory, name)))
        folder = os.path.relpath(directory, base).replace(os.sep, "/")
        if folder != ".":
            folders[folder] = {"path": folder, "voice_count": 0, "subfolders": [join(folder, n) for n in names]}
    for item in counted:
        folder, _ = split(item)
        if folder in folders:
            folders[folder]["voice_count"] += 1
    if only_leading_to:
        held = {split(item)[0] for item in counted}

        def leads(path: str) -> bool:
            return any(folder == path or folder.startswith(path + "/") for folder in held)
        folders = {path: {**entry, "subfolders": [sub for sub in entry["subfolders"] if leads(sub)]}
                   for path, entry in folders.items() if leads(path)}
    return {"folders": list(folders.values()), "total_folders": len(folders), "total_voices": len(counted)}
