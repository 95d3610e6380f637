"""Which served model a request goes to (chatterbox_server/synthesis/routing.py), and the settings that
say which models are served (CHATTERBOX_MODELS, CHATTERBOX_PRELOAD, CHATTERBOX_GPU_MEMORY_BUDGET, ...)."""
from __future__ import annotations

import pytest

from chatterbox_server.settings import ModelSpec, Settings, SettingsError
from chatterbox_server.synthesis import routing
from chatterbox_server.synthesis.requests import OPENAI_MODELS
from chatterbox_server.synthesis.routing import Served, UnknownModel, model_id, names_of, route
from workers.engines.base import EngineInfo
from workers.engines.tone import MULTILINGUAL_LANGUAGES, ToneEngine

# what Services.route hands routing: every OpenAI name, mapped as the default CHATTERBOX_OPENAI_MODEL_MAP says
OPENAI_MAP = {name: "" for name in OPENAI_MODELS} | Settings().openai_model_pairs


def served(*names: str, described: bool = True) -> list[Served]:
    """The served models as the tone engine describes them (turbo: tags; multilingual: 23 languages)."""
    return [Served(name, ToneEngine(name).describe() if described else None) for name in names]


ALL = served("standard", "turbo", "multilingual")


def go(requested: str | None, models: list[Served] = ALL, language: str | None = None, **kwargs) -> str:
    return route(requested, language, models, OPENAI_MAP, **kwargs)


# -- names --------------------------------------------------------------------------------------------
def test_model_ids_and_the_names_each_model_answers_to():
    assert model_id("turbo") == "chatterbox-turbo" and model_id("hibari") == "hibari"
    assert names_of(ALL[1]) == ("chatterbox-turbo", "turbo", "tone-turbo")
    chatterbox = EngineInfo("chatterbox", "chatterbox-turbo", "cuda", 24000, ("chatterbox", "chatterbox-turbo"))
    assert names_of(Served("turbo", chatterbox)) == ("chatterbox-turbo", "turbo")    # not the generic name
    assert names_of(Served("turbo", None)) == ("chatterbox-turbo", "turbo")


@pytest.mark.parametrize("requested, expected", [
    ("chatterbox-turbo", "turbo"), ("chatterbox-standard", "standard"), ("chatterbox-multilingual", "multilingual"),
    ("turbo", "turbo"), ("multilingual", "multilingual"), ("standard", "standard"),
    ("Chatterbox-Turbo", "turbo"), (" turbo ", "turbo"),                 # case and spaces do not matter
    ("tone-turbo", "turbo"), ("tone", "standard"), ("tone-multilingual", "multilingual"),     # engine names
    (None, "standard"), ("", "standard"),                                 # none: the default model
])
def test_our_ids_short_names_and_engine_names(requested, expected):
    assert go(requested) == expected


def test_the_default_is_the_first_served_model():
    assert go(None, served("turbo", "standard")) == "turbo"


def test_chatterbox_means_standard_where_served_else_the_default():
    assert go("chatterbox") == "standard"
    assert go("chatterbox", served("turbo", "standard")) == "standard"
    assert go("chatterbox", served("multilingual", "turbo")) == "multilingual"


@pytest.mark.parametrize("requested, expected", [("tts-1", "turbo"), ("tts-1-hd", "standard"),
                                                 ("gpt-4o-mini-tts", "standard"), ("TTS-1", "turbo")])
def test_openai_names_go_where_the_map_says(requested, expected):
    assert go(requested, served("multilingual", "standard", "turbo")) == expected


def test_an_openai_name_whose_model_is_not_served_goes_to_the_default():
    assert go("tts-1", served("standard", "multilingual")) == "standard"
    assert go("tts-1-hd", served("multilingual", "turbo")) == "multilingual"
    # an OpenAI name the map leaves out goes to the default too (Services maps each to "")
    assert route("gpt-4o-mini-tts", None, ALL, {name: "" for name in OPENAI_MODELS}) == "standard"


def test_vendor_ids_go_to_the_default_model_only_where_vendor_ids_are_expected():
    for vendor in ("eleven_multilingual_v2", "sonic-3", "aura-2-thalia-en"):
        assert go(vendor, vendor_ids=True) == "standard"
        with pytest.raises(UnknownModel):
            go(vendor)
    assert go("chatterbox-turbo", vendor_ids=True) == "turbo"            # ours still route


@pytest.mark.parametrize("requested", ["chatterbox-multilingual", "multilingual"])
def test_a_model_of_ours_that_is_not_enabled_is_refused_where_vendor_ids_are_taken_too(requested):
    # a vendor's id goes to the default model; one of our names is no vendor's id, and is not swapped
    with pytest.raises(UnknownModel, match="not enabled"):
        go(requested, served("standard", "turbo"), vendor_ids=True)
    hibari = [Served("hibari", EngineInfo("hibari", "hibari", "cpu", 24000, ("hibari", "hibari-en")))]
    with pytest.raises(UnknownModel, match="not enabled"):
        go(requested, hibari, vendor_ids=True)
    assert go("eleven_turbo_v2_5", hibari, vendor_ids=True) == "hibari"


def test_an_unknown_model_is_refused_listing_the_served_ids():
    with pytest.raises(UnknownModel) as refused:
        go("gpt-5-voice", served("standard", "turbo"))
    message = str(refused.value)
    assert "'gpt-5-voice'" in message and "not served here" in message
    assert "chatterbox-standard, chatterbox-turbo" in message and "multilingual" not in message


@pytest.mark.parametrize("requested", ["chatterbox-multilingual", "multilingual", "Multilingual"])
def test_a_known_model_that_is_not_enabled_says_so(requested):
    with pytest.raises(UnknownModel) as refused:
        go(requested, served("standard", "turbo"))
    message = str(refused.value)
    assert "not enabled" in message and "CHATTERBOX_MODELS" in message
    assert "chatterbox-standard, chatterbox-turbo" in message


def test_no_served_model_at_all_is_unknown():
    with pytest.raises(UnknownModel, match="no model"):
        route(None, None, [], OPENAI_MAP)


# -- language -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("requested", [None, "tts-1", "tts-1-hd", "chatterbox", "eleven_multilingual_v2"])
def test_a_language_the_chosen_model_cannot_speak_goes_to_the_multilingual_model(requested):
    assert go(requested, language="fr", vendor_ids=True) == "multilingual"


@pytest.mark.parametrize("requested, expected", [("chatterbox-standard", "standard"), ("turbo", "turbo"),
                                                 ("tone-turbo", "turbo"), ("chatterbox-multilingual", "multilingual")])
def test_a_model_picked_by_our_name_keeps_the_request_whatever_its_language(requested, expected):
    # (the engine's own checks then refuse the language it cannot speak: a 400, not a silent re-route)
    assert go(requested, language="fr") == expected


def test_english_never_reroutes_and_a_language_nobody_speaks_stays_put():
    assert go(None, language="en") == "standard"
    assert go("tts-1", language="EN") == "turbo"
    assert go(None, language="fr", models=served("standard", "turbo")) == "standard"
    assert go(None, language="xx") == "standard"          # not one of multilingual's 23 either


def test_a_default_that_speaks_the_language_keeps_it_and_an_undescribed_model_is_not_guessed_at():
    assert go(None, served("multilingual", "standard"), language="de") == "multilingual"
    # the default's features are not known yet (no worker described it): no re-route on a guess
    undescribed = [Served("standard", None), *served("multilingual")]
    assert go(None, undescribed, language="fr") == "standard"
    # a multilingual model that has not described itself cannot be found for the language
    assert go(None, [*served("standard"), Served("multilingual", None)], language="fr") == "standard"


def test_speaker_of_finds_the_served_model_that_speaks_a_language():
    assert routing.speaker_of("ja", ALL[0], ALL) == "multilingual"
    assert routing.speaker_of("ja", ALL[2], ALL) is None         # it speaks it itself
    assert set(MULTILINGUAL_LANGUAGES) >= {"fr", "de", "ja", "zh"} and len(MULTILINGUAL_LANGUAGES) == 23


# -- settings: CHATTERBOX_MODELS and friends ------------------------------------------------------------
def settings(**env: str) -> Settings:
    return Settings.from_env({f"CHATTERBOX_{key.upper()}": value for key, value in env.items()})


def test_models_with_workers_and_devices():
    s = settings(engine="chatterbox", models="standard,turbo:2@cuda:0+cuda:1,multilingual@cpu")
    assert s.model_specs == (ModelSpec("standard", 1, ("auto",)), ModelSpec("turbo", 2, ("cuda:0", "cuda:1")),
                             ModelSpec("multilingual", 1, ("cpu",)))
    assert s.slot_models == (("standard", "auto"), ("turbo", "cuda:0"), ("turbo", "cuda:0"), ("turbo", "cuda:1"),
                             ("turbo", "cuda:1"), ("multilingual", "cpu"))
    assert s.preload_names == ("standard",)


def test_entries_without_workers_or_devices_take_model_workers_and_device():
    s = settings(engine="chatterbox", models=" Turbo , standard ", model_workers="2", device="cuda:0,cuda:1")
    assert [spec.name for spec in s.model_specs] == ["turbo", "standard"]
    assert s.slot_models == (("turbo", "cuda:0"), ("turbo", "cuda:0"), ("turbo", "cuda:1"), ("turbo", "cuda:1"),
                             ("standard", "cuda:0"), ("standard", "cuda:0"), ("standard", "cuda:1"),
                             ("standard", "cuda:1"))
    # the tone engine's workers live on the CPU unless an entry says otherwise
    assert settings(engine="tone", models="standard,turbo").slot_models == (("standard", "cpu"), ("turbo", "cpu"))


def test_without_models_the_one_model_setting_is_served():
    assert settings(engine="tone").slot_models == (("standard", "cpu"),)
    assert [spec.name for spec in settings(engine="tone", model="turbo").model_specs] == ["turbo"]


def test_the_hibari_engine_serves_its_one_model_whatever_models_says():
    s = settings(engine="hibari", models="standard,turbo,multilingual", model_workers="2", preload="turbo")
    assert s.model_specs == (ModelSpec("hibari", 2, ("cpu",)),)
    assert s.slot_models == (("hibari", "cpu"), ("hibari", "cpu"))
    assert s.preload_names == ("hibari",)


def test_preload_choices():
    models = "standard,turbo,multilingual"
    assert settings(engine="tone", models=models).preload_names == ("standard",)
    assert settings(engine="tone", models=models, preload="all").preload_names == ("standard", "turbo", "multilingual")
    assert settings(engine="tone", models=models, preload="none").preload_names == ()
    listed = settings(engine="tone", models=models, preload="turbo, multilingual")
    assert listed.preload_names == ("turbo", "multilingual")


@pytest.mark.parametrize("text, expected", [("20GB", 20 * 10**9), ("12000MB", 12 * 10**9), ("1.5GiB", 3 * 2**29),
                                            ("100 mb", 10**8), ("4096", 4096), ("", None)])
def test_memory_budget_sizes(text, expected):
    assert settings(engine="tone", gpu_memory_budget=text).memory_budget_bytes == expected


@pytest.mark.parametrize("env, variable, words", [
    ({"models": "standard,medium"}, "CHATTERBOX_MODELS", "'medium' is no model"),
    ({"models": "standard,turbo:0"}, "CHATTERBOX_MODELS", "at least 1 worker"),
    ({"models": "turbo:two"}, "CHATTERBOX_MODELS", "must be a number"),
    ({"models": "standard,turbo,standard"}, "CHATTERBOX_MODELS", "'standard' twice"),
    ({"models": " , "}, "CHATTERBOX_MODELS", "names no model"),
    ({"gpu_memory_budget": "12XB"}, "CHATTERBOX_GPU_MEMORY_BUDGET", "20GB"),
    ({"gpu_memory_budget": "0GB"}, "CHATTERBOX_GPU_MEMORY_BUDGET", "more than 0"),
    ({"models": "standard,turbo", "preload": "multilingual"}, "CHATTERBOX_PRELOAD", "'multilingual', which is not"),
    ({"preload": "turbo"}, "CHATTERBOX_PRELOAD", "not served"),
    ({"idle_unload_seconds": "-1"}, "CHATTERBOX_IDLE_UNLOAD_SECONDS", "negative"),
    ({"openai_model_map": "tts-1=fast"}, "CHATTERBOX_OPENAI_MODEL_MAP", "tts-1=fast"),
])
def test_bad_model_settings_are_refused_naming_the_variable(env, variable, words):
    with pytest.raises(SettingsError) as refused:
        settings(engine="tone", **env)
    assert variable in str(refused.value) and words in str(refused.value)
