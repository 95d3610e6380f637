from chatterbox_server.api.language_notes import degraded_headers, language_extras_availability, language_note
from workers.engines.base import EngineInfo
from workers.engines.language_extras import missing_extras


def info(**overrides) -> EngineInfo:
    return EngineInfo(**{"engine": "chatterbox", "model": "chatterbox-multilingual", "device": "cpu",
                         "sample_rate": 24000, "model_names": ("chatterbox",), **overrides})


def test_only_served_languages_with_a_missing_package_are_listed():
    missing = missing_extras(("en", "zh", "ja"), installed=lambda module: module == "pykakasi")
    assert list(missing) == ["zh"] and "spacy-pkuseg is not installed" in missing["zh"]
    assert missing_extras(("en", "de"), installed=lambda module: False) == {}


def test_a_request_in_that_language_says_so():
    engine = info(languages=("en", "zh"), language_extras_missing={"zh": "segmentation is off\n(x)"})
    note = language_note(engine, "zh")
    assert note == "zh: segmentation is off (x)"
    assert degraded_headers(note) == {"X-Chatterbox-Degraded": "language_extras", "X-Chatterbox-Language-Extras": note}
    assert language_note(engine, "en") is None and language_note(engine, None) is None and degraded_headers(None) == {}


def test_health_entry():
    assert language_extras_availability(info())["code"] == "not_applicable"
    assert language_extras_availability(info(languages=("en",)))["available"] is True
    entry = language_extras_availability(info(languages=("zh",), language_extras_missing={"zh": "off"}))
    assert entry["available"] is False and entry["languages"] == ["zh"]
