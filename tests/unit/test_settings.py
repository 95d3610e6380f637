"""Tests for chatterbox_server.settings."""
from __future__ import annotations

import dataclasses

import pytest

from chatterbox_server.settings import Settings, SettingsError, env_name, markdown_table


def test_defaults_from_an_empty_environment():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.engine == "auto"
    assert settings.model == "standard"
    assert settings.model_workers == 1
    assert settings.max_input_chars == 4096
    assert settings.queue_timeout == 300.0
    assert settings.bind_addresses == ["127.0.0.1:4123", "127.0.0.1:7860"]
    assert settings.voice_alias_map == {}
    assert settings.run_dir == ""


def test_from_env_does_not_read_os_environ_when_given_a_mapping(monkeypatch):
    monkeypatch.setenv("CHATTERBOX_MODEL_WORKERS", "7")
    assert Settings.from_env({}).model_workers == 1
    assert Settings.from_env().model_workers == 7


def test_env_parsing_of_int_float_and_str():
    settings = Settings.from_env({
        "CHATTERBOX_MODEL_WORKERS": " 3 ",
        "CHATTERBOX_QUEUE_TIMEOUT": "12.5",
        "CHATTERBOX_CHUNK_TIMEOUT": "7",
        "CHATTERBOX_DATA_DIR": "/srv/voices",
        "CHATTERBOX_ENGINE": "tone",
        "CHATTERBOX_LOG_LEVEL": "debug",
    })
    assert settings.model_workers == 3 and isinstance(settings.model_workers, int)
    assert settings.queue_timeout == 12.5 and isinstance(settings.queue_timeout, float)
    assert settings.chunk_timeout == 7.0 and isinstance(settings.chunk_timeout, float)
    assert settings.data_dir == "/srv/voices"
    assert settings.engine == "tone"
    assert settings.log_level == "debug"


def test_blank_values_keep_the_default():
    settings = Settings.from_env({"CHATTERBOX_MODEL_WORKERS": "  ", "CHATTERBOX_ENGINE": ""})
    assert settings.model_workers == 1
    assert settings.engine == "auto"


def test_overrides_win_over_the_environment():
    settings = Settings.from_env({"CHATTERBOX_ENGINE": "hibari", "CHATTERBOX_MODEL_WORKERS": "4"},
                                 engine="tone", model_workers=2)
    assert settings.engine == "tone"
    assert settings.model_workers == 2


@pytest.mark.parametrize("name, raw", [
    ("CHATTERBOX_MODEL_WORKERS", "two"),
    ("CHATTERBOX_MAX_INPUT_CHARS", "1.5"),
    ("CHATTERBOX_QUEUE_TIMEOUT", "soon"),
])
def test_invalid_number_raises_settings_error_naming_the_variable(name, raw):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: raw})
    assert name in str(info.value)
    assert repr(raw) in str(info.value)


def test_choices_are_enforced():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"CHATTERBOX_ENGINE": "foo"})
    message = str(info.value)
    assert "CHATTERBOX_ENGINE" in message and "'foo'" in message
    for choice in ("auto", "hibari", "chatterbox", "tone"):
        assert choice in message


@pytest.mark.parametrize("name, value", [
    ("CHATTERBOX_MODEL", "huge"),
    ("CHATTERBOX_LOG_LEVEL", "verbose"),
])
def test_other_choice_fields_are_enforced(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize("field", ["model_workers", "max_queued_jobs", "max_input_chars"])
def test_counts_must_be_positive(field):
    with pytest.raises(SettingsError, match=env_name(field)):
        Settings.from_env({env_name(field): "0"})


def test_empty_bind_is_rejected():
    with pytest.raises(SettingsError, match="CHATTERBOX_BIND"):
        Settings.from_env({}, bind=" , ")


@pytest.mark.parametrize("bind, expected", [
    ("0.0.0.0:4123", ["0.0.0.0:4123"]),
    ("a:1 b:2", ["a:1", "b:2"]),
    ("a:1,b:2", ["a:1", "b:2"]),
    (" a:1 ,  b:2,,c:3 ", ["a:1", "b:2", "c:3"]),
    ("unix:/run/x.sock", ["unix:/run/x.sock"]),
])
def test_bind_addresses_split_on_spaces_and_commas(bind, expected):
    assert Settings.from_env({"CHATTERBOX_BIND": bind}).bind_addresses == expected


@pytest.mark.parametrize("raw, expected", [
    ("", {}),
    ("alloy=narrator", {"alloy": "narrator"}),
    (" alloy = narrator , echo=bob ", {"alloy": "narrator", "echo": "bob"}),
    ("alloy=narrator,broken,=x,y=", {"alloy": "narrator"}),
    ("a=b=c", {"a": "b=c"}),
])
def test_voice_alias_map(raw, expected):
    assert Settings.from_env({}, voice_aliases=raw).voice_alias_map == expected


def test_to_env_round_trips():
    settings = Settings.from_env({}, engine="tone", model_workers=3, queue_timeout=2.5, voice_aliases="a=b")
    assert Settings.from_env(settings.to_env()) == settings


def test_markdown_table_lists_every_field():
    table = markdown_table()
    lines = table.splitlines()
    assert lines[0] == "| variable | default | meaning |"
    fields = dataclasses.fields(Settings)
    assert len(lines) == 2 + len(fields)
    for f in fields:
        assert f.metadata["doc"], f.name
        assert sum(f"| `{env_name(f.name)}` |" in line for line in lines) == 1, f.name
    assert "| `CHATTERBOX_RUN_DIR` | (empty) |" in table
    assert "| `CHATTERBOX_MODEL_WORKERS` | `1` |" in table
