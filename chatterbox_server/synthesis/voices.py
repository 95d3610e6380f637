"""One-off reference voices of a request (a voice_file upload, a VC target): decoded and checked
like a library voice (security/untrusted_audio.py), written as a temporary WAV the caller deletes
and the janitor finds if the process dies first. The library itself is store/voice_library.py."""
from __future__ import annotations

import os
import tempfile

import numpy as np

from chatterbox_server.audio.encoders import pcm_to_wav
from chatterbox_server.runtime.janitor import upload_prefix
from chatterbox_server.security.untrusted_audio import STORED_RATE, decode_reference


def write_temporary_voice(directory: str, data: bytes, max_bytes: int) -> str:
    """A one-off voice_file, decoded and checked like a library voice; the caller deletes it."""
    samples, _, _ = decode_reference(data, max_bytes)
    return write_temporary_wav(directory, samples, STORED_RATE)


def write_temporary_wav(directory: str, samples: np.ndarray, rate: int) -> str:
    os.makedirs(directory, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=upload_prefix(), suffix=".wav", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pcm_to_wav(samples, rate))
    except BaseException:
        os.unlink(path)             # a full disk leaves no half file behind
        raise
    return path
