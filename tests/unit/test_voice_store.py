"""The voice library on plain files: folders, metadata, aliases, rename, default voice, and two
processes changing the same library at once."""
from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

from chatterbox_server.audio.encoders import pcm_to_wav
from chatterbox_server.errors import ApiError
from chatterbox_server.store.voice_library import VoiceLibrary
from chatterbox_server.synthesis.voice_defaults import OPENAI_NAMES, merge_defaults

RATE = 24000


def wav(seconds: float = 1.5, frequency: float = 200.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return pcm_to_wav((np.sin(2 * np.pi * frequency * t) * 8000).astype(np.int16), RATE)


@pytest.fixture()
def library(tmp_path) -> VoiceLibrary:
    return VoiceLibrary(str(tmp_path / "voices"), 10_000_000, aliases={"alloy": "narrator"})


def test_folder_qualified_voices_resolve_inside_the_library_only(library, tmp_path):
    library.add("narrator", wav(), folder="team/en")
    assert library.names() == ["team/en/narrator"]
    for reference in ("team/en/narrator", "team/en/narrator.wav", "narrator", "narrator.mp3"):
        assert library.find(reference).name == "team/en/narrator"
    (tmp_path / "secret.json").write_text("{}")
    (tmp_path / "secret.wav").write_bytes(wav())
    for reference in ("../secret", "team/../../secret", "/etc/passwd", "team\\en\\narrator", "team/en/narrator\x00"):
        assert library.find(reference) is None
    with pytest.raises(ApiError):
        library.add("x", wav(), folder="../outside")
    assert not (tmp_path / "outside").exists()


def test_a_bare_name_in_two_folders_is_ambiguous(library):
    library.add("twin", wav(), folder="a")
    library.add("twin", wav(), folder="b")
    assert library.find("twin") is None and library.find("a/twin").name == "a/twin"


def test_metadata_update_move_rename_and_aliases_follow(library):
    library.add("narrator", wav(), fields={"display_name": "The Narrator", "tags": ["en"]})
    assert library.add_alias("narrator", "storyteller") == ["alloy", "storyteller"]
    library.set_default("storyteller")
    moved = library.update("narrator", {"description": "calm", "folder_path": "books"})
    assert moved.name == "books/narrator" and moved.meta["description"] == "calm"
    assert moved.display_name == "The Narrator" and moved.meta["tags"] == ["en"]
    renamed = library.rename("books/narrator", "reader")
    assert renamed.name == "books/reader"
    assert library.aliases["storyteller"] == "books/reader" and library.default_voice == "books/reader"
    assert library.aliases["alloy"] == "narrator"           # CHATTERBOX_VOICE_ALIASES stays as it is
    with pytest.raises(ApiError) as caught:
        library.add_alias("books/reader", "alloy")
    assert caught.value.status == 409
    assert library.delete("books/reader") == ["books/reader.wav", "books/reader.json"]
    assert "storyteller" not in library.aliases and library.default_voice == ""


def test_library_state_survives_a_new_instance(library, tmp_path):
    library.add("narrator", wav())
    library.add_alias("narrator", "nick")
    library.set_default("narrator")
    again = VoiceLibrary(str(tmp_path / "voices"), 10_000_000)
    assert again.aliases == {"nick": "narrator"} and again.default_voice == "narrator"


def test_cleanup_removes_half_voices_and_dangling_aliases(library):
    library.add("kept", wav())
    library.add("gone", wav())
    library.add_alias("gone", "old")
    os.unlink(os.path.join(library.directory, "gone.wav"))
    assert library.cleanup() == ["gone.json", "alias old"]
    assert library.names() == ["kept"] and library.aliases_of("gone") == []


def test_voice_defaults_fill_only_what_a_request_leaves_out():
    defaults = {"exaggeration": 0.8, "speed_factor": 1.2, "temperature": 0.5, "unknown": 1}
    merged = merge_defaults({"input": "hi", "temperature": 0.9}, defaults,
                            {"exaggeration", "speed", "temperature"}, OPENAI_NAMES)
    assert merged == {"input": "hi", "temperature": 0.9, "exaggeration": 0.8, "speed": 1.2}


def test_stored_for_follows_aliases_and_the_default(library):
    library.add("narrator", wav(), fields={"default_parameters": {"exaggeration": 0.9}})
    assert library.stored_for("alloy").name == "narrator"
    assert library.stored_for(None) is None
    library.set_default("narrator")
    assert library.stored_for(None).default_parameters == {"exaggeration": 0.9}


def _add_aliases(directory: str, prefix: str, count: int) -> None:
    library = VoiceLibrary(directory, 10_000_000)
    for index in range(count):
        library.add_alias("narrator", f"{prefix}{index}")
        library.update("narrator", {f"{prefix}_field": index})


def test_two_processes_changing_the_library_lose_nothing(library):
    library.add("narrator", wav())
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_aliases, args=(library.directory, prefix, 25)) for prefix in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    aliases = [alias for alias in library.aliases_of("narrator") if alias != "alloy"]
    assert len(aliases) == 50 and {f"a{i}" for i in range(25)} | {f"b{i}" for i in range(25)} == set(aliases)
    meta = library.get("narrator").meta
    assert meta["a_field"] == 24 and meta["b_field"] == 24


def test_resolving_a_voice_counts_its_use(library):
    from workers.engines.base import EngineInfo
    info = EngineInfo("tone", "tone", "cpu", RATE, ("tone",), supports_cloning=True)
    library.add("narrator", wav(), folder="team")
    assert library.resolve("team/narrator.wav", info).audio_path.endswith("team/narrator.wav")
    library.resolve("alloy", info)                      # the alias from CHATTERBOX_VOICE_ALIASES: same voice
    meta = library.get("team/narrator").meta
    assert meta["usage_count"] == 2 and meta["last_used"]
    with pytest.raises(ApiError) as caught:
        library.resolve("../narrator", info)
    assert caught.value.status == 400


# -- workspaces: owners, shared voices, voices made before workspaces ------------------------------
def key_of(name: str):
    """`owns` of a plain (non-admin) key, as security.guards.owner_check() builds it."""
    return lambda owner: owner is not None and owner == name


def test_a_private_voice_is_its_owners_only(library):
    from workers.engines.base import EngineInfo
    info = EngineInfo("tone", "tone", "cpu", RATE, ("tone",), supports_cloning=True)
    alice, bob = key_of("alice"), key_of("bob")
    library.add("secret", wav(), folder="a", owner="alice", owns=alice)
    library.add_alias("a/secret", "hidden", alice)
    assert library.names(alice) == ["a/secret"] and library.names(bob) == []
    assert library.find("secret", alice).owner == "alice"
    assert library.find("secret", bob) is None and library.find("a/secret.wav", bob) is None
    assert library.list(bob) == [] and "hidden" not in library.visible_aliases(bob)
    assert library.resolve("secret", info, owns=alice).name == "a/secret"
    for name in ("secret", "hidden", "a/secret"):
        with pytest.raises(ApiError) as caught:
            library.resolve(name, info, owns=bob)
        assert caught.value.code == "voice_not_found" and "secret" not in caught.value.message.split(";")[1]
    assert "a/secret" not in library.available(info, bob) and "hidden" not in library.available(info, bob)
    assert library.stored_for("secret", bob) is None
    # every change answers like a voice that does not exist
    assert library.delete("secret", bob) == [] and library.update("secret", {"shared": True}, bob) is None
    assert library.rename("secret", "mine", bob) is None and library.add_alias("secret", "x", bob) is None
    assert library.remove_alias("secret", "hidden", bob) is None and library.set_default("secret", bob) is None
    with pytest.raises(ApiError) as caught:     # its name is taken, and no overwrite replaces it
        library.add("secret", wav(), True, "a", owner="bob", owns=bob)
    assert caught.value.status == 409 and "taken" in caught.value.message
    assert library.get("a/secret").owner == "alice" and not library.get("a/secret").shared


def test_a_shared_voice_is_everyones_to_use_and_its_owners_to_change(library):
    from workers.engines.base import EngineInfo
    info = EngineInfo("tone", "tone", "cpu", RATE, ("tone",), supports_cloning=True)
    alice, bob = key_of("alice"), key_of("bob")
    library.add("common", wav(), owner="alice", owns=alice, shared=True)
    assert library.find("common", bob).shared and library.resolve("common", info, owns=bob).name == "common"
    for change in (lambda: library.delete("common", bob), lambda: library.update("common", {"shared": False}, bob),
                   lambda: library.rename("common", "mine", bob), lambda: library.add_alias("common", "x", bob),
                   lambda: library.add("common", wav(), True, owner="bob", owns=bob)):
        with pytest.raises(ApiError) as caught:
            change()
        assert caught.value.status in (403, 409)
    assert library.get("common").owner == "alice"
    library.update("common", {"shared": False}, alice)
    with pytest.raises(ApiError) as caught:     # the default is every key's: a private voice cannot be it
        library.set_default("common", alice, require_shared=True)
    assert caught.value.code == "voice_not_shared" and library.default_voice == ""
    library.update("common", {"shared": True, "owner": "bob"}, alice)     # the owner is never a field to change
    assert library.get("common").owner == "alice"
    assert library.set_default("common", bob, require_shared=True).name == "common"
    assert library.resolve(None, info, owns=bob).name == "common"
    library.update("common", {"shared": False}, alice)
    assert library.resolve(None, info, owns=bob).name == info.default_voice     # not bob's now: the built-in one
    assert library.resolve(None, info, owns=alice).name == "common" and library.stored_for(None, bob) is None


def test_voices_made_before_workspaces_are_an_admins_until_shared(library):
    from chatterbox_server.security.guards import owner_check_for
    from chatterbox_server.security.keys import ApiKeys
    keys = ApiKeys((("alice", b"k" * 16), ("root", b"r" * 16)), frozenset({"root"}))
    library.add("old", wav())                                   # no keys: no owner
    assert library.get("old").owner is None
    alice, root = owner_check_for(keys, "alice"), owner_check_for(keys, "root")
    assert library.find("old", alice) is None and library.find("old", root).name == "old"
    assert owner_check_for(ApiKeys(), "anyone")(None)           # without keys: one workspace, as before
    assert owner_check_for(keys, None)("alice")                 # a job made without keys: checked when made
    library.update("old", {"shared": True}, root)
    assert library.find("old", alice).name == "old"
