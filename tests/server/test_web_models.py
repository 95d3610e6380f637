"""Several models on one server (issue 20) in the web app, in Chromium: the Speak panel's Model menu
with each served model's state and the aliases, the chosen model's languages and the settings it
ignores, "loading model…" while a request waits for its model; the Server panel's Models table with
Load and Unload, the server's refusal shown, and a model whose load fails.

The servers run the tone engine imitating the standard, turbo and multilingual models; the browser
and the Session (every request outside the server refused) are test_web_app's."""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import test_web_app as web
from serverkit import Server, start_server
from test_web_app import RECORD_AUDIO_GRAPH, Session, expect, session_on

pytestmark = web.pytestmark
browser = web.browser      # test_web_app's fixture, under its name here

MODELS = "standard,turbo,multilingual"
TURBO_LOAD_SECONDS = 3
MODEL_MENU = '#panel-speak .field[data-param="model"] select'
LANGUAGE_MENU = '#panel-speak .field[data-param="language"] select'
# When the page first says it is loading a model (performance.now(), polled every 10 ms).
WATCH_LOADING = """
window.__loadingAt = null;
setInterval(() => {
  const node = document.querySelector('#model-loading');
  if (node && node.textContent && window.__loadingAt === null) window.__loadingAt = performance.now();
}, 10);
"""


@pytest.fixture(scope="module")
def models_server(tmp_path_factory) -> Iterator[Server]:
    """Standard loaded at start; turbo (3 s to load) and multilingual load on first use."""
    server = start_server(tmp_path_factory.mktemp("web-models"), engine="tone", models=MODELS, front_workers="1",
                          tone_load_seconds=f"turbo={TURBO_LOAD_SECONDS}", graceful_timeout="5")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory) -> Iterator[Server]:
    """The multilingual model's weights cannot be loaded."""
    server = start_server(tmp_path_factory.mktemp("web-models-failing"), engine="tone", models=MODELS,
                          front_workers="1", tone_fail_load="multilingual=weights missing", graceful_timeout="5")
    yield server
    server.stop()


@pytest.fixture
def models_page(browser, models_server) -> Iterator[Session]:
    yield from session_on(browser, models_server)


@pytest.fixture
def failing_page(browser, failing_server) -> Iterator[Session]:
    yield from session_on(browser, failing_server)


def served_states(server: Server) -> dict[str, str]:
    listing = requests.get(server.url("/v1/models"), timeout=10).json()
    return {entry["id"]: entry["state"] for entry in listing["data"] if "state" in entry}


def is_speech(response) -> bool:
    return response.url.endswith("/v1/audio/speech") and response.request.method == "POST"


# -- Speak ----------------------------------------------------------------------------------------
def test_model_menu_lists_the_models_and_aliases_and_speaks_french_with_multilingual(models_page, models_server):
    assert served_states(models_server) == {"chatterbox-standard": "loaded", "chatterbox-turbo": "unloaded",
                                            "chatterbox-multilingual": "unloaded"}
    models_page.context.add_init_script(RECORD_AUDIO_GRAPH)
    page = models_page.open()
    menu = page.locator(MODEL_MENU)
    expect(menu.locator("option").first).to_have_text("(server's default: chatterbox-standard)")
    expect(menu.locator("option[data-state]")).to_have_text([
        "chatterbox-standard (loaded)", "chatterbox-turbo (unloaded: loads on first use)",
        "chatterbox-multilingual (unloaded: loads on first use)"])
    aliases = menu.locator("optgroup option")
    expect(aliases.filter(has_text=re.compile(r"^tts-1 → chatterbox-turbo$"))).to_have_count(1)
    expect(aliases.filter(has_text=re.compile(r"^multilingual → chatterbox-multilingual$"))).to_have_count(1)

    languages = page.locator(f"{LANGUAGE_MENU} option")
    # The default model speaks English; the server sends French to the multilingual model when none is chosen.
    expect(page.locator(f"{LANGUAGE_MENU} > option", has_text="English (en)")).to_have_count(1)
    expect(page.locator(f"{LANGUAGE_MENU} optgroup option", has_text="French (fr) → chatterbox-multilingual")
           ).to_have_count(1)
    menu.select_option("chatterbox-multilingual")
    expect(languages.filter(has_text=re.compile(r"^French \(fr\)$"))).to_have_count(1)
    expect(page.locator(f"{LANGUAGE_MENU} optgroup")).to_have_count(0)
    assert languages.count() == 1 + 23, languages.all_inner_texts()        # (model's language) and its 23
    expect(page.locator('#speak-settings .field[data-param="exaggeration"] input[type=number]')).to_be_enabled()
    page.select_option(LANGUAGE_MENU, "fr")

    page.fill("#panel-speak textarea", "Bonjour tout le monde, ceci est un essai en français.")
    with page.expect_response(is_speech) as answer:
        page.click("#play")
    expect(page.locator("#panel-speak")).to_have_attribute("data-state", "done", timeout=30000)
    assert answer.value.status == 200
    sent = answer.value.request.post_data_json
    assert sent["model"] == "chatterbox-multilingual" and sent["language"] == "fr", sent
    scheduled = page.evaluate("window.__scheduled")
    assert scheduled and sum(item["samples"] for item in scheduled) > 24000 * 0.5, scheduled
    expect(menu.locator('option[value="chatterbox-multilingual"]')).to_have_text("chatterbox-multilingual (loaded)")
    models_page.shoot("speak-models", full_page=False)


def test_speaking_with_a_model_not_loaded_says_loading_model_before_the_audio(models_page, models_server):
    assert requests.post(models_server.url("/v1/models/chatterbox-turbo/unload"), timeout=10).status_code == 200
    models_page.context.add_init_script(RECORD_AUDIO_GRAPH + WATCH_LOADING)
    page = models_page.open()
    menu = page.locator(MODEL_MENU)
    expect(menu.locator('option[value="chatterbox-turbo"]')).to_have_text(
        "chatterbox-turbo (unloaded: loads on first use)")
    menu.select_option("chatterbox-turbo")
    for name in ("exaggeration", "cfg_weight"):         # turbo ignores them: disabled, said so, not sent
        setting = page.locator(f'#speak-settings .field[data-param="{name}"]')
        expect(setting.locator("input[type=number]")).to_be_disabled()
        expect(setting.locator(".model-note")).to_have_text("Not used by chatterbox-turbo: not sent.")
    expect(page.locator('#speak-settings .field[data-param="speed"] input[type=number]')).to_be_enabled()

    page.fill("#panel-speak textarea", "The turbo model speaks once its weights are in memory.")
    with page.expect_response(is_speech) as answer:
        page.click("#play")
    expect(page.locator("#model-loading")).to_have_text("loading model chatterbox-turbo…")
    expect(page.locator("#panel-speak")).to_have_attribute("data-state", "done", timeout=30000)
    expect(page.locator("#model-loading")).to_be_empty()
    assert answer.value.status == 200
    sent = answer.value.request.post_data_json
    assert sent["model"] == "chatterbox-turbo" and "exaggeration" not in sent and "cfg_weight" not in sent, sent
    loading_at, scheduled = page.evaluate("window.__loadingAt"), page.evaluate("window.__scheduled")
    assert loading_at is not None and scheduled, (loading_at, scheduled)
    # said while the model loaded, seconds before its first audio reached the graph
    assert scheduled[0]["at"] - loading_at > (TURBO_LOAD_SECONDS - 1) * 1000, (loading_at, scheduled[0])
    expect(menu.locator('option[value="chatterbox-turbo"]')).to_have_text("chatterbox-turbo (loaded)")

    menu.select_option("")                                # the default model uses them again
    expect(page.locator('#speak-settings .field[data-param="exaggeration"] input[type=number]')).to_be_enabled()
    expect(page.locator('#speak-settings .field[data-param="exaggeration"] .model-note')).to_be_empty()


# -- Server ---------------------------------------------------------------------------------------
def test_server_panel_models_table_loads_and_unloads_a_model(models_page, models_server):
    requests.post(models_server.url("/v1/models/chatterbox-turbo/unload"), timeout=10)
    page = models_page.open()
    expect(page.locator("#health-badge")).to_contain_text("default model chatterbox-standard (of 3)")
    page.click("#tab-server")
    expect(page.locator('#panel-server dd[data-key="Default model"]')).to_have_text("chatterbox-standard")
    table = page.locator("#panel-server table.models")
    expect(table.locator("thead th")).to_have_text(["Model", "State", "Default", "Device", "Workers loaded", "Memory",
                                                    "Requests now", "Loads", "Last load", "Error", ""])
    expect(table.locator("tbody tr")).to_have_count(3)
    standard = table.locator('tr[data-model="chatterbox-standard"]')
    expect(standard.locator("td").nth(1)).to_have_text("default")
    expect(standard.locator("td.state")).to_have_text("loaded")
    turbo = table.locator('tr[data-model="chatterbox-turbo"]')
    expect(turbo.locator("td.state")).to_have_text("unloaded")
    expect(turbo.locator("td.worker-count")).to_have_text("0/1")
    expect(turbo.get_by_role("button", name="Unload chatterbox-turbo", exact=True)).to_be_disabled()

    turbo.get_by_role("button", name="Load chatterbox-turbo", exact=True).click()
    expect(turbo.get_by_role("button", name="Load chatterbox-turbo", exact=True)).to_have_text("Loading…")
    expect(turbo.locator("td.state")).to_have_text("loaded", timeout=20000)
    expect(turbo.locator("td.worker-count")).to_have_text("1/1")
    expect(turbo.locator("td.memory")).to_have_text(re.compile(r"^[1-9][\d.]* MiB$"))
    expect(turbo.locator("td").nth(7)).to_have_text(re.compile(rf"^{TURBO_LOAD_SECONDS}\.\d s$"))   # its last load
    expect(turbo.get_by_role("button", name="Load chatterbox-turbo", exact=True)).to_be_disabled()
    models_page.shoot("server-models")

    turbo.get_by_role("button", name="Unload chatterbox-turbo", exact=True).click()
    expect(turbo.locator("td.state")).to_have_text("unloaded")
    expect(turbo.locator("td.worker-count")).to_have_text("0/1")
    expect(turbo.locator("td.memory")).to_have_text("0 MiB")
    assert served_states(models_server)["chatterbox-turbo"] == "unloaded"
    expect(page.locator("#models-error")).to_be_empty()


def test_unload_of_a_model_in_use_shows_the_servers_refusal(models_page, models_server):
    slow = " ".join(f"Sentence {i} takes a while [[sleep:0.5]]." for i in range(12))
    speaking = threading.Thread(target=lambda: requests.post(
        models_server.url("/v1/audio/speech"), json={"input": slow, "model": "chatterbox-standard"}, timeout=60))
    page = models_page.open()
    page.click("#tab-server")
    standard = page.locator('#panel-server table.models tr[data-model="chatterbox-standard"]')
    expect(standard.locator("td.state")).to_have_text("loaded")
    speaking.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not next(
                m["active_jobs"] for m in requests.get(models_server.url("/v1/models"), timeout=5).json()["data"]
                if m["id"] == "chatterbox-standard"):
            time.sleep(0.1)
        standard.get_by_role("button", name="Unload chatterbox-standard", exact=True).click()
        expect(page.locator("#models-error")).to_contain_text("Model chatterbox-standard is in use")
        expect(standard.locator("td.state")).to_have_text("loaded")
    finally:
        speaking.join()


def test_a_model_whose_load_fails_is_shown_failed_and_cannot_be_chosen(failing_page):
    page = failing_page.open()
    option = page.locator(f'{MODEL_MENU} option[value="chatterbox-multilingual"]')
    expect(option).to_have_text("chatterbox-multilingual (unloaded: loads on first use)")
    expect(option).to_be_enabled()
    page.click("#tab-server")
    row = page.locator('#panel-server table.models tr[data-model="chatterbox-multilingual"]')
    load = row.get_by_role("button", name="Load chatterbox-multilingual", exact=True)
    load.click()
    expect(page.locator("#models-error")).to_contain_text("could not be loaded")
    expect(page.locator("#models-error")).to_contain_text("weights missing")
    expect(row.locator("td.state")).to_have_text("failed")
    expect(row.locator("td.error")).to_contain_text("weights missing")
    expect(load).to_be_enabled()                            # it may be tried again
    failing_page.shoot("server-models-failed")

    page.click("#tab-speak")                               # the menu follows: failed, and not to be chosen
    expect(option).to_have_text("chatterbox-multilingual (failed)")
    expect(option).to_be_disabled()
    expect(page.locator(f'{MODEL_MENU} option[value="chatterbox-turbo"]')).to_be_enabled()
