"""The web app at `/` and the offline API docs, driven in Debian's Chromium by Playwright against real servers.

Every request the browser makes outside the server under test is recorded and refused, so the pages
are shown to work with no network. Screenshots of the main screens go to tests/artifacts/web/.
"""
from __future__ import annotations

import io
import math
import os
import re
import shutil
import struct
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from serverkit import ROOT, Server, start_server

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:         # requirements-dev.txt installs it; CI fails below instead of skipping
    sync_playwright = None

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MISSING = sync_playwright is None or not Path(CHROMIUM).exists()
# CI installs chromium (.ci/run), so there a missing browser is a failure, not a skip
pytestmark = [pytest.mark.server,
              pytest.mark.skipif(MISSING and not os.environ.get("CI"),
                                 reason="needs playwright (requirements-dev.txt) and chromium (apt-get chromium)")]
if not MISSING:
    expect.set_options(timeout=15_000)      # a busy 2-core CI machine: panels may take seconds to fill
ARTIFACTS = ROOT / "tests" / "artifacts" / "web"
API_KEY = "open-sesame"
SENTENCES = ("The quick brown fox jumps over the lazy dog. Streaming speech starts before the text is done. "
             "Every chunk is spoken while the next one is synthesized. ")


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert not MISSING, "playwright or chromium is missing (requirements-dev.txt; apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])   # a beeping microphone
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def keyed_tone_server(tmp_path_factory) -> Iterator[Server]:
    """The tone engine clones and converts voices; the key checks that the page sends it everywhere."""
    server = start_server(tmp_path_factory.mktemp("web-tone"), engine="tone", front_workers="1",
                          api_key=API_KEY, graceful_timeout="5")
    yield server
    server.stop()


class Session:
    """A browser context whose requests outside `origin` are recorded and refused."""

    def __init__(self, browser: Browser, origin: str, **options) -> None:
        self.origin = origin
        self.outside: list[str] = []
        self.console: list[str] = []
        self.context: BrowserContext = browser.new_context(accept_downloads=True, **options)
        self.context.route(lambda url: not self.local(url), self._refuse)
        self.context.on("request", self._record)
        self.page: Page = self.context.new_page()
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def _record(self, request) -> None:
        if not self.local(request.url):
            self.outside.append(request.url)

    def local(self, url: str) -> bool:
        return url.startswith((f"{self.origin}/", "blob:", "data:"))

    def _refuse(self, route) -> None:
        self.outside.append(route.request.url)
        route.abort("internetdisconnected")

    def open(self, path: str = "/", key: str | None = None) -> Page:
        self.page.goto(self.origin + path)
        if key is not None:
            self.page.fill("#key-input", key)
            self.page.click("#key-dialog button[value=save]")
            expect(self.page.locator("#key-dialog")).not_to_be_visible()
        if path.startswith("/") and path.split("#")[0] == "/":
            self.page.wait_for_selector("body[data-ready=true]", timeout=20000)
        return self.page

    def shoot(self, name: str, full_page: bool = True) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)

    def close(self) -> None:
        self.context.close()


def session_on(browser, server: Server) -> Iterator[Session]:
    """A page on the server; at its end, no request left the server and the page raised nothing."""
    session = Session(browser, server.base, viewport={"width": 1100, "height": 900})
    yield session
    session.close()
    assert session.outside == [], f"requests outside the server: {session.outside}"
    assert not [line for line in session.console if line.startswith("pageerror")], session.console


@pytest.fixture
def hibari_page(browser, hibari_server) -> Iterator[Session]:
    yield from session_on(browser, hibari_server)


@pytest.fixture
def tone_page(browser, keyed_tone_server) -> Iterator[Session]:
    yield from session_on(browser, keyed_tone_server)


def wav_bytes(seconds: float, frequency: float = 220.0, rate: int = 24000) -> bytes:
    frames = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * i / rate)))
                      for i in range(int(seconds * rate)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def active_requests(server: Server) -> int:
    answer = requests.get(server.url("/v1/status"), headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    return answer.json()["active_requests"]


# Records every buffer the page hands to the Web Audio graph, with the time it did so.
RECORD_AUDIO_GRAPH = """
window.__scheduled = [];
const start = AudioBufferSourceNode.prototype.start;
AudioBufferSourceNode.prototype.start = function (...args) {
  window.__scheduled.push({ at: performance.now(), samples: this.buffer ? this.buffer.length : 0 });
  return start.apply(this, args);
};
"""


# -- Speak ----------------------------------------------------------------------------------------
def test_play_streams_audio_into_the_page_before_the_request_ends(hibari_page):
    hibari_page.context.add_init_script(RECORD_AUDIO_GRAPH)
    page = hibari_page.open()
    text = SENTENCES * 6
    page.fill("#panel-speak textarea", text)
    expect(page.locator("#panel-speak .count")).to_contain_text(f"{len(text)} / 100,000 characters")
    page.click("#play")
    expect(page.locator("#panel-speak")).to_have_attribute("data-state", "done", timeout=30000)

    scheduled = page.evaluate("window.__scheduled")
    timing = page.evaluate("""performance.getEntriesByType('resource')
        .filter(e => e.name.endsWith('/v1/audio/speech')).map(e => ({start: e.startTime, end: e.responseEnd}))""")
    assert len(timing) == 1 and len(scheduled) >= 4, (timing, scheduled)
    assert scheduled[0]["at"] < timing[0]["end"], "the first audio reached the graph only after the whole response"
    first_ms = int(page.get_attribute("#panel-speak", "data-first-audio-ms"))
    assert 0 < first_ms < 5000
    expect(page.locator("#first-audio")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.locator("#synthesized")).to_have_text(re.compile(r"^(\d+) of \1 chunks$"))
    assert page.locator("#panel-speak progress").evaluate("p => p.value") == 100
    hibari_page.shoot("speak")

    with page.expect_download() as download:          # the audio heard, as WAV, without a second synthesis
        page.click("#download")
    data = Path(download.value.path()).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert (len(data) - 44) // 2 == sum(item["samples"] for item in scheduled)

    with page.expect_response(lambda r: "/api/v1/tts" in r.url) as answer:
        page.click("#save")                            # synthesized again with the seed, kept under /outputs
    [saved_file] = answer.value.json()["output_files"]
    page.click("#tab-outputs")                         # the server's outputs, newest first: ours is on top
    row = page.locator(f'#panel-outputs tr[data-file="{saved_file["filename"]}"]')
    expect(row).to_have_count(1)
    expect(page.locator("#panel-outputs tbody tr").first).to_have_attribute("data-file", saved_file["filename"])
    expect(row.locator("td").first).to_have_text("tts")
    expect(row.locator("td.params")).to_contain_text(f"seed={page.inner_text('#seed-used')}")
    with page.expect_download() as saved:
        row.get_by_role("button", name=re.compile("^Download")).click()
    kept = Path(saved.value.path()).read_bytes()     # whole-file chunking differs a little from streaming's
    assert kept[:4] == b"RIFF" and abs(len(kept) - len(data)) < 0.05 * len(data)


def make_output(server: Server, text: str, project: str | None = None) -> list[str]:
    """Generates WAV + MP3 under /outputs through the Extended API; answers their folder-qualified names."""
    body = {"text": text, "bypass_whisper_checking": True, "export_formats": ["wav", "mp3"], "seed": 7}
    if project:
        body["project"] = project
    answer = requests.post(server.url("/api/v1/tts?response_mode=url"), json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return [f["filename"] for f in answer.json()["output_files"]]


def test_outputs_panel_lists_filters_plays_and_deletes(hibari_page, hibari_server):
    older = make_output(hibari_server, "An older file at the top level.")
    newer = make_output(hibari_server, "A newer file in a project folder.", project="webbook")
    assert all(name.startswith("webbook/") for name in newer)
    page = hibari_page.open("/#outputs")
    rows = page.locator("#panel-outputs tbody tr")
    expect(rows.first).to_have_attribute("data-file", re.compile(r"^webbook/"))      # newest first
    row = page.locator(f'#panel-outputs tr[data-file="{newer[0]}"]')
    expect(row.locator("td.params")).to_contain_text("seed=7")
    expect(row).to_contain_text(re.compile(r"\d+\.\d s"))                      # its length

    page.select_option('#panel-outputs .field[data-param="folder"] select', "webbook")
    expect(rows).to_have_count(2)
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.file)")) == sorted(newer)
    page.select_option('#panel-outputs .field[data-param="folder"] select', "")
    page.fill('#panel-outputs .field[data-param="search"] input', older[0].rsplit(".", 1)[0])
    expect(rows).to_have_count(2)                                                   # its wav and its mp3
    hibari_page.shoot("outputs")

    with page.expect_response(lambda r: r.url.endswith("/outputs/" + older[0])) as played:
        page.get_by_role("button", name=f"Play {older[0]}").click()
    assert played.value.status == 200
    preview = page.locator('#panel-outputs audio[aria-label="Output preview"]')
    expect(preview).to_have_attribute("src", re.compile("^blob:"))
    with page.expect_download() as download:
        page.get_by_role("button", name=f"Download {older[1]}").click()
    assert download.value.suggested_filename == older[1]
    assert Path(download.value.path()).read_bytes()[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Delete {older[0]}").click()
    expect(rows).to_have_count(1)
    assert requests.get(hibari_server.url("/outputs/" + older[0]), timeout=5).status_code == 404
    assert requests.get(hibari_server.url("/outputs/" + older[1]), timeout=5).status_code == 200


def test_bad_values_show_the_servers_message_next_to_their_field(hibari_page):
    page = hibari_page.open()
    page.click("#play")                               # no text at all
    input_error = page.locator('#panel-speak .field[data-param="input"] .field-error')
    expect(input_error).to_have_text("Must contain text to speak.")
    expect(page.locator("#panel-speak textarea")).to_have_attribute("aria-invalid", "true")

    page.fill("#panel-speak textarea", "Hello.")
    page.click("#panel-speak details.settings summary")
    page.fill('#panel-speak .field[data-param="speed"] input[type=number]', "9")
    page.click("#play")
    speed = page.locator('#panel-speak .field[data-param="speed"]')
    expect(speed.locator(".field-error")).to_contain_text("less than or equal to 4.0")
    expect(speed.locator("input[type=number]")).to_be_focused()
    expect(input_error).to_be_empty()
    hibari_page.shoot("speak-error", full_page=False)


def test_stop_cancels_the_request_on_the_server(tone_page, keyed_tone_server):
    page = tone_page.open(key=API_KEY)
    slow = " ".join(f"Sentence number {i} takes a while [[sleep:0.4]]." for i in range(10))
    page.fill("#panel-speak textarea", slow)
    with page.expect_response(lambda r: "/v1/status/progress?request_id=" in r.url) as polled:
        page.press("#panel-speak textarea", "Control+Enter")
    assert polled.value.json()["total_chunks"] > 2
    page.wait_for_selector("#panel-speak[data-first-audio-ms]", timeout=20000)
    expect(page.locator("#speaking")).to_have_text(re.compile(r"^chunk 1 of \d+$"))
    assert active_requests(keyed_tone_server) == 1
    page.click("#stop")
    deadline = time.monotonic() + 5
    while active_requests(keyed_tone_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert active_requests(keyed_tone_server) == 0, "the server went on synthesizing after Stop"
    expect(page.locator("#speaking")).to_have_text("stopped")
    page.select_option('.field[data-param="response_format"] select', "mp3")   # then download it whole
    with page.expect_download() as download:
        page.click("#download")
    assert Path(download.value.path()).read_bytes()[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")


# -- Voices and voice conversion ------------------------------------------------------------------
def test_upload_a_voice_preview_it_and_speak_with_it(tone_page, tmp_path):
    page = tone_page.open(key=API_KEY)
    page.click("#tab-voices")
    clip = tmp_path / "narrator.wav"
    clip.write_bytes(wav_bytes(2.0))
    page.fill('#panel-voices .field[data-param="name"] input', "narrator")
    page.set_input_files('#panel-voices input[type=file]', str(clip))
    page.click("#panel-voices button[type=submit]")
    row = page.locator('tr[data-voice="narrator"]')
    expect(row).to_contain_text("2.0 s")

    page.click('button[aria-label="Preview narrator"]')
    expect(page.locator("#panel-voices audio.preview")).to_have_attribute("src", re.compile("^blob:"))

    page.fill('#panel-voices .field[data-param="name"] input', "narrator")   # the same name again: 409 by the field
    page.set_input_files('#panel-voices input[type=file]', str(clip))
    page.click("#panel-voices button[type=submit]")
    expect(page.locator('#panel-voices .field[data-param="name"] .field-error')).to_contain_text("exists")
    tone_page.shoot("voices")

    page.click("#tab-speak")
    page.select_option('#panel-speak .field[data-param="voice"] select', "narrator")
    page.fill("#panel-speak textarea", "Speak with the uploaded voice, please.")
    with page.expect_response(lambda r: r.url.endswith("/v1/audio/speech")) as answer:
        page.click("#play")
    assert answer.value.status == 200
    assert answer.value.request.post_data_json["voice"] == "narrator"
    expect(page.locator("#panel-speak")).to_have_attribute("data-state", "done", timeout=20000)


def test_rename_default_aliases_and_preview_of_the_stored_clip(hibari_page, hibari_server):
    """hibari cannot clone, so a preview plays the stored clip (/download), not a synthesis with it."""
    answer = requests.post(hibari_server.url("/v1/voices"), data={"name": "webclip"},
                           files={"voice_file": ("c.wav", wav_bytes(1.5, 300.0))}, timeout=10)
    assert answer.status_code == 201, answer.text
    page = hibari_page.open("/#voices")
    row = page.locator('tr[data-voice="webclip"]')
    expect(row).to_contain_text("1.5 s")
    with page.expect_response(lambda r: r.url.endswith("/v1/voices/webclip/download")) as clip:
        page.click('button[aria-label="Preview webclip"]')
    assert clip.value.status == 200
    expect(page.locator("#panel-voices audio.preview")).to_have_attribute("src", re.compile("^blob:"))

    page.once("dialog", lambda dialog: dialog.accept("storyteller"))
    page.click('button[aria-label="Rename webclip"]')
    row = page.locator('tr[data-voice="storyteller"]')
    expect(row).to_have_count(1)
    expect(page.locator('tr[data-voice="webclip"]')).to_have_count(0)

    page.click('button[aria-label="Make storyteller the default"]')
    expect(row.locator("th")).to_have_text("storyteller (default)")
    assert requests.get(hibari_server.url("/v1/voices/default"), timeout=5).json()["default_voice"] == "storyteller"

    page.once("dialog", lambda dialog: dialog.accept("teller"))
    page.click('button[aria-label="Add an alias for storyteller"]')
    expect(row.locator("td.aliases")).to_contain_text("teller")
    assert requests.get(hibari_server.url("/v1/voices/storyteller/aliases"), timeout=5).json()["aliases"] == ["teller"]
    page.once("dialog", lambda dialog: dialog.accept("teller"))       # taken: the server's 409, in words
    page.click('button[aria-label="Add an alias for storyteller"]')
    expect(page.locator("#panel-voices .voice-list + div .form-error")).to_contain_text("teller")
    hibari_page.shoot("voices-manage")

    page.click('button[aria-label="Remove the alias teller"]')
    expect(row.locator("td.aliases")).to_have_text("–")
    page.click('button[aria-label="Stop using storyteller as the default"]')
    expect(row.locator("th")).to_have_text("storyteller")
    page.once("dialog", lambda dialog: dialog.accept("A calm reader"))     # Extended metadata: description, folder
    page.click('button[aria-label="Describe storyteller"]')
    expect(row.locator(".about")).to_have_text("A calm reader")
    page.once("dialog", lambda dialog: dialog.accept("webteam"))
    page.click('button[aria-label="Move storyteller to a folder"]')
    moved = page.locator('tr[data-voice="webteam/storyteller"]')
    expect(moved.locator(".about")).to_have_text("A calm reader")
    page.select_option('#panel-voices .field[data-param="folder"] select', "webteam")
    expect(page.locator("#panel-voices tbody tr")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('button[aria-label="Delete webteam/storyteller"]')
    expect(moved).to_have_count(0)
    assert requests.get(hibari_server.url("/v1/voices/webteam/storyteller"), timeout=5).status_code == 404


def test_server_panel_lists_the_servers_recent_errors(hibari_page, hibari_server):
    assert requests.post(hibari_server.url("/v1/audio/speech"), json={"input": "x", "speed": 99},
                         timeout=10).status_code == 400          # another client's mistake
    page = hibari_page.open("/#server")
    errors = page.locator("#panel-server table.errors tbody tr")
    expect(errors.filter(has_text="POST /v1/audio/speech").first).to_contain_text("400")
    expect(errors.filter(has_text="POST /v1/audio/speech").first).to_contain_text("speed")


def test_record_a_voice_from_the_microphone(tone_page):
    page = tone_page.open(key=API_KEY)
    page.click("#tab-voices")
    page.fill('#panel-voices .field[data-param="name"] input', "recorded")
    page.click("#record")
    expect(page.locator("#record")).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(1600)
    page.click("#record")
    expect(page.locator("#panel-voices audio[aria-label='Your recording']")).to_be_visible()
    page.click("#panel-voices button[type=submit]")
    expect(page.locator('tr[data-voice="recorded"]')).to_contain_text("webm")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('button[aria-label="Delete recorded"]')
    expect(page.locator('tr[data-voice="recorded"]')).to_have_count(0)


def test_voice_conversion_panel(tone_page, keyed_tone_server, tmp_path):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    requests.post(keyed_tone_server.url("/v1/voices"), headers=headers, data={"name": "target"},
                  files={"voice_file": ("t.wav", wav_bytes(1.5, 330.0))}, timeout=10)
    page = tone_page.open(key=API_KEY)
    page.click("#tab-convert")
    page.click("#panel-convert button[type=submit]")   # nothing chosen: the server names the field
    expect(page.locator('#panel-convert .field[data-param="input_audio"] .field-error')).to_contain_text("required")

    source = tmp_path / "speech.wav"
    source.write_bytes(wav_bytes(2.0, 180.0))
    page.set_input_files('#panel-convert .field[data-param="input_audio"] input', str(source))
    page.select_option('#panel-convert .field[data-param="target_voice_source"] select', "target")
    page.check('#panel-convert input[value="mp3"]')
    with page.expect_response(lambda r: "/api/v1/vc" in r.url) as converted:
        page.click("#panel-convert button[type=submit]")
    made = [f["filename"] for f in converted.value.json()["output_files"]]
    result = page.locator("#panel-convert .result")
    expect(result.locator("audio")).to_have_attribute("src", re.compile("^blob:"), timeout=20000)
    expect(result.locator("a")).to_have_text(["Download wav", "Download mp3"])
    with page.expect_download() as download:
        result.locator("a", has_text="Download wav").click()
    assert Path(download.value.path()).read_bytes()[:4] == b"RIFF"
    tone_page.shoot("convert")

    page.click("#tab-outputs")
    for name in made:
        expect(page.locator(f'#panel-outputs tr[data-file="{name}"] td').first).to_have_text("vc")


def test_convert_a_stored_recording(tone_page, keyed_tone_server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for name, frequency in (("target2", 330.0),):
        requests.post(keyed_tone_server.url("/v1/voices"), headers=headers, data={"name": name},
                      files={"voice_file": ("t.wav", wav_bytes(1.5, frequency))}, timeout=10)
    stored = requests.post(keyed_tone_server.url("/api/v1/vc_input"), headers=headers, data={"folder_path": "ep1"},
                           files={"vc_input_file": ("talk.wav", wav_bytes(1.0, 200.0))}, timeout=10)
    assert stored.status_code == 201, stored.text
    page = tone_page.open("/#convert", key=API_KEY)
    page.select_option('#panel-convert .field[data-param="input_audio_source"] select', "ep1/talk.wav")
    page.select_option('#panel-convert .field[data-param="target_voice_source"] select', "target2")
    with page.expect_response(lambda r: "/api/v1/vc" in r.url) as converted:
        page.click("#panel-convert button[type=submit]")
    assert converted.value.status == 200
    assert converted.value.request.post_data_json["input_audio_source"] == "ep1/talk.wav"
    result = page.locator("#panel-convert .result")
    expect(result.locator("audio")).to_have_attribute("src", re.compile("^blob:"), timeout=20000)
    expect(result).to_contain_text("1.0 s of audio")


# -- long-text jobs, history, languages -----------------------------------------------------------
def job_status(server: Server, job_id: str) -> str:
    answer = requests.get(server.url(f"/v1/audio/speech/long/{job_id}"),
                          headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    return answer.json()["status"]


def test_long_job_submit_watch_pause_resume_cancel_retry_download(tone_page, keyed_tone_server):
    page = tone_page.open("/#jobs", key=API_KEY)
    text = " ".join(f"Part {i} of the long text is read slowly [[sleep:0.3]]." for i in range(20))
    page.fill("#panel-jobs textarea", text)
    expect(page.locator("#panel-jobs .count")).to_have_text(f"{len(text):,} / 200,000 characters")
    page.fill('#panel-jobs .field[data-param="display_name"] input', "Chapter 1")
    page.select_option('#panel-jobs .field[data-param="response_format"] select', "wav")
    with page.expect_response(lambda r: r.url.endswith("/v1/audio/speech/long") and r.request.method == "POST") as made:
        page.click("#panel-jobs button[type=submit]")
    first = made.value.json()
    assert first["total_chunks"] > 3, first
    row = page.locator(f'#panel-jobs tr[data-job="{first["job_id"]}"]')
    expect(row.locator("th")).to_have_text("Chapter 1")
    expect(row.locator(".percent")).not_to_have_text(re.compile(r"^0%"))      # progress shows while it runs
    assert row.locator("progress").evaluate("p => p.value") > 0
    tone_page.shoot("jobs-running")

    row.get_by_role("button", name=re.compile("^Pause")).click()
    expect(row).to_have_attribute("data-status", "paused")
    assert job_status(keyed_tone_server, first["job_id"]) == "paused"
    row.get_by_role("button", name=re.compile("^Resume")).click()
    expect(row).to_have_attribute("data-status", re.compile("^(pending|processing)$"))
    row.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(row).to_have_attribute("data-status", "cancelled")
    assert job_status(keyed_tone_server, first["job_id"]) == "cancelled"
    expect(row.get_by_role("button", name=re.compile("^(Pause|Resume|Cancel)"))).to_have_count(0)

    with page.expect_response(lambda r: r.url.endswith("/retry")) as retried:
        row.get_by_role("button", name=re.compile("^Retry")).click()
    retry = page.locator(f'#panel-jobs tr[data-job="{retried.value.json()["job_id"]}"]')
    expect(page.locator("#panel-jobs tbody tr").first).to_have_attribute("data-job", retried.value.json()["job_id"])
    expect(retry.locator("td.status")).to_have_text("completed (retry 1)", timeout=30000)
    expect(retry.locator(".percent")).to_have_text("100%")
    with page.expect_download() as download:
        retry.get_by_role("button", name=re.compile("^Download")).click()
    assert download.value.suggested_filename.endswith(".wav")
    assert Path(download.value.path()).read_bytes()[:4] == b"RIFF"
    expect(page.locator('#job-stats dd[data-key="Completed"]')).to_have_text("1")
    tone_page.shoot("jobs")

    jobs = page.locator("#panel-jobs tbody tr")                  # the history: search and status filter
    page.fill('#panel-jobs .field[data-param="search"] input', "Part 7 of the long text")
    expect(jobs).to_have_count(2)
    page.fill('#panel-jobs .field[data-param="search"] input', "words that were never read")
    expect(jobs).to_have_count(0)
    expect(page.locator("#panel-jobs")).to_contain_text("No job matches.")
    page.fill('#panel-jobs .field[data-param="search"] input', "")
    page.select_option('#panel-jobs .field[data-param="status"] select', "cancelled")
    expect(jobs).to_have_count(1)
    expect(jobs).to_have_attribute("data-job", first["job_id"])

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("^Delete")).click()
    expect(row).to_have_count(0)
    assert requests.get(keyed_tone_server.url(f"/v1/audio/speech/long/{first['job_id']}"),
                        headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5).status_code == 404


def test_request_history_statistics_and_languages(hibari_page, hibari_server):
    assert requests.post(hibari_server.url("/v1/audio/speech"), json={"input": "Kept in the history."},
                         timeout=30).status_code == 200
    page = hibari_page.open()
    expect(page.locator('#panel-speak .field[data-param="language"] option', has_text="(en)")).to_have_count(1)
    page.click("#tab-server")
    total = page.locator('#panel-server dd[data-key="total_requests"]')
    expect(total).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(page.locator("#panel-server table.history tbody tr").first).to_contain_text("completed")


# -- the pages themselves -------------------------------------------------------------------------
def test_pages_render_fully_with_every_external_route_blocked(hibari_page):
    page = hibari_page.open()
    expect(page.locator("[role=tab]")).to_have_text(["Speak", "Live", "Dialogue", "Voices", "Convert", "Long jobs",
                                                     "Outputs", "Server"])
    expect(page.locator('#panel-speak .field[data-param="model"] option')).not_to_have_count(1)
    settings = page.locator("#speak-settings .field")
    expect(settings.filter(has_text="Speed")).to_contain_text("0.25 – 4")       # the range from /openapi.json
    assert page.locator('#panel-speak .field[data-param="speed"] input[type=number]').get_attribute("max") == "4"

    page.focus("#tab-speak")                             # tabs by keyboard
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-live")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("End")
    expect(page.locator("#tab-server")).to_be_focused()
    expect(page.locator("#panel-server table.workers tbody tr")).to_have_attribute("data-state", "ready")
    expect(page.locator('#panel-server dd[data-key="Queue depth"]')).to_have_text("0")
    expect(page.locator('#panel-server tbody td').nth(6)).to_contain_text("MiB")        # memory of the worker
    hibari_page.shoot("server")

    page.set_viewport_size({"width": 390, "height": 844})   # a phone: nothing wider than the screen, on any tab
    for tab in page.locator("[role=tab]").all():
        tab.click()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, tab.inner_text()
    page.click("#tab-speak")
    hibari_page.shoot("speak-phone")
    assert not [line for line in hibari_page.console if "Content Security Policy" in line or "pageerror" in line]

    page.set_viewport_size({"width": 1100, "height": 900})
    page.goto(hibari_page.origin + "/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=20000)
    assert page.locator(".opblock").count() >= 10
    hibari_page.shoot("docs", full_page=False)
    page.goto(hibari_page.origin + "/redoc")
    expect(page.get_by_role("heading", name="Whole audio file, or Server-Sent Events with stream_format=sse")
           ).to_be_visible(timeout=20000)
    hibari_page.shoot("redoc", full_page=False)


def test_no_page_names_another_host_and_every_page_forbids_one(hibari_server):
    for path in ("/", "/docs", "/redoc"):
        answer = requests.get(hibari_server.url(path), timeout=5)
        assert answer.status_code == 200
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", answer.text), path
        assert "default-src 'self'" in answer.headers["Content-Security-Policy"]
    assert "<title>chatterbox-server</title>" in requests.get(hibari_server.extended_base + "/", timeout=5).text
    for asset in ("/web/js/main.js", "/docs/assets/swagger-ui-bundle.js",
                  "/web/vendor/redoc-2.5.4/redoc.standalone.js"):
        assert requests.get(hibari_server.url(asset), timeout=5).status_code == 200, asset
    assert requests.get(hibari_server.url("/docs/assets/..%2Fcore.py"), timeout=5).status_code == 404
