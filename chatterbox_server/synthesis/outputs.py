"""A made clip into the outputs: every export format encoded, written under one base name with
its generation metadata beside it (store/outputs_index.py), then the retention limits applied."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from chatterbox_server.audio.encoders import FILE_EXTENSIONS, encode_whole
from chatterbox_server.store import outputs_index
from chatterbox_server.store.outputs import OutputStore

log = logging.getLogger("chatterbox.outputs")


@dataclass(frozen=True)
class Generated:
    formats: tuple[str, ...]
    files: dict[str, str]             # format -> file name in the outputs directory
    data: dict[str, bytes]            # format -> encoded bytes


def encode_and_store(store: OutputStore, formats: tuple[str, ...], pcm: bytes, sample_rate: int,
                     generation_type: str = "tts", parameters: dict[str, Any] | None = None, tag: str = "",
                     source_files: list[str] | None = None, folder: str = "", owner: str | None = None) -> Generated:
    """Encode every format, write them under one base name with their generation metadata beside
    them (see store.outputs_index), then apply the retention limits."""
    data = {fmt: encode_whole(fmt, pcm, sample_rate) for fmt in formats}
    names = store.store({FILE_EXTENSIONS[fmt]: data[fmt] for fmt in formats}, prefix=generation_type, tag=tag,
                        folder=folder)
    files = {fmt: names[FILE_EXTENSIONS[fmt]] for fmt in formats}
    try:
        outputs_index.record_generation(store, files, generation_type, parameters or {},
                                        duration_seconds=round(len(pcm) / 2 / sample_rate, 3),
                                        sample_rate=sample_rate, source_files=source_files, owner=owner)
    except OSError:         # the audio is written: a full disk costs its listing metadata, not the request
        log.exception("writing the metadata of %s failed", files)
    try:
        removed = store.prune(keep=files.values())
        if removed:
            log.info("retention removed %d output file(s)", len(removed))
    except OSError:
        log.exception("pruning %s failed", store.directory)
    return Generated(formats, files, data)
