"""store.paths: the one resolver of client-named paths under DATA_DIR."""
from __future__ import annotations

import os

import pytest

from chatterbox_server.store import paths
from chatterbox_server.store.paths import PathError

BAD = ["../x", "..", ".", "a/../b", "a/./b", "a//b", "/etc/passwd", "/", "a\\b", "..\\x", "a\x00b", ".hidden",
       "a/.git", "x" * 101, "a/b.", "a/b /c", "\u2024\u2024/x", "a\u2215b", "\uff0e\uff0e/x", "caf\u00e9",
       "a\u202eb", "a\nb", "-x", "~root", "/".join(["a"] * 9)]


@pytest.mark.parametrize("value", BAD)
def test_clean_relative_refuses_anything_but_plain_segments(value):
    with pytest.raises(PathError) as caught:
        paths.clean_relative(value, "folder")
    assert caught.value.status == 400 and caught.value.param == "folder"


@pytest.mark.parametrize(("value", "clean"), [
    ("a", "a"), ("a/b", "a/b"), ("a/b/", "a/b"), (" a/b ", "a/b"), ("My Project/take 1.wav", "My Project/take 1.wav"),
    ("v1.2/x-y_z", "v1.2/x-y_z"), ("", ""), (None, ""),
])
def test_clean_relative_normalises_good_paths(value, clean):
    assert paths.clean_relative(value, "folder") == clean


def test_empty_is_refused_when_a_name_is_required():
    with pytest.raises(PathError):
        paths.clean_relative("", "filename", allow_empty=False)


def test_confine_refuses_symlinks_on_the_way(tmp_path):
    root = tmp_path / "store"
    (root / "real").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    os.symlink(outside / "f.wav", root / "real" / "f.wav")
    assert paths.confine(str(root), "real/new.wav", "p") == os.path.join(os.path.realpath(root), "real", "new.wav")
    for relative in ("link", "link/x.wav", "real/f.wav"):
        with pytest.raises(PathError):
            paths.confine(str(root), relative, "p")


def test_a_symlinked_root_is_fine(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "root")
    _, path = paths.resolve(str(tmp_path / "root"), "a/b.wav", "p")
    assert path == os.path.join(str(tmp_path / "real"), "a", "b.wav")


def test_walk_files_skips_hidden_entries_links_and_odd_names(tmp_path):
    for name in ("a.wav", "sub/b.wav", "sub/deep/c.wav", ".hidden/x.wav", "sub/.tmp-1", "bad\u00e9/y.wav"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    os.symlink(tmp_path / "sub", tmp_path / "linked")
    os.symlink(tmp_path / "a.wav", tmp_path / "sub" / "link.wav")
    assert paths.walk_files(str(tmp_path)) == [("", "a.wav"), ("sub", "b.wav"), ("sub/deep", "c.wav")]


def test_folder_tree_counts_direct_members(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    tree = paths.folder_tree(str(tmp_path), ["x", "a/y", "a/b/z", "a/b/w"])
    assert tree["total_folders"] == 3 and tree["total_voices"] == 4
    by_path = {folder["path"]: folder for folder in tree["folders"]}
    assert by_path["a"] == {"path": "a", "voice_count": 1, "subfolders": ["a/b"]}
    assert by_path["a/b"]["voice_count"] == 2 and by_path["c"]["voice_count"] == 0


def test_a_workspace_sees_only_the_folders_leading_to_its_own_files(tmp_path):
    """Another key's project folder names (outputs, VC inputs, voices) are its own business."""
    for folder in ("mine/deep", "theirs/secret-project", "empty"):
        (tmp_path / folder).mkdir(parents=True)
    tree = paths.folder_tree(str(tmp_path), ["top.wav", "mine/deep/a.wav"], only_leading_to=True)
    assert [folder["path"] for folder in tree["folders"]] == ["mine", "mine/deep"]
    assert tree["folders"][0]["subfolders"] == ["mine/deep"] and tree["total_folders"] == 2


@pytest.mark.parametrize("value", [*BAD, "linked/secret.wav"])
def test_vc_sources_and_reference_names_stay_inside_their_stores(tmp_path, value):
    """input_audio_source (VC-inputs store) and reference_audio_filename/target_voice_source (voices)."""
    from marshmallow import ValidationError

    from chatterbox_server.api.extended.fields import reference_voice_name
    from chatterbox_server.store.vc_inputs import VcInputStore
    from chatterbox_server.store.voice_library import VoiceLibrary
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"RIFF")
    (outside / "secret.json").write_text("{}")
    store = VcInputStore(str(tmp_path / "vc_inputs"), str(tmp_path / "state"))
    library = VoiceLibrary(str(tmp_path / "voices"), 1000)
    os.symlink(outside, tmp_path / "vc_inputs" / "linked")
    os.symlink(outside, tmp_path / "voices" / "linked")
    try:
        assert store.locate(value, "input_audio_source") is None
    except PathError:
        pass
    assert library.find(value) is None
    if value != "linked/secret.wav":
        with pytest.raises(ValidationError):
            reference_voice_name(value)
