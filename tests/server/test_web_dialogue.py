"""The web app's Dialogue panel in Chromium: a script with [S1]/[S2] speakers, a library voice for
each, POST /v1/audio/dialogue as SSE played as it arrives, the heard turn highlighted from the
playback position, Download as WAV, the server's 400 next to the script, and Stop.

The browser, page and server fixtures are test_web_app's (the tone engine, behind an API key)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import test_web_app as web
from test_voices import reference_wav
from test_web_app import API_KEY, RECORD_AUDIO_GRAPH, expect

pytestmark = web.pytestmark
# test_web_app's fixtures, under their names here
browser, keyed_tone_server, tone_page = web.browser, web.keyed_tone_server, web.tone_page

AUTH = {"Authorization": f"Bearer {API_KEY}"}
RATE = 24000
SEED = 4242
# The tone engine speaks 0.15 s a word: about 1.5 s a turn, long enough to watch the highlight move.
SCRIPT = ("[S1] Good morning, and welcome to the show about streaming speech today.\n"
          "[S2] Thank you, it is a pleasure to be here with you this morning.\n"
          "[S1] Then let us begin with the very first question of the day.")
TEXTS = [line.split("] ", 1)[1] for line in SCRIPT.splitlines()]
# Every turn takes the tone engine 1.2 s to make: Stop comes while most of them are still to be made.
SLOW_SCRIPT = "\n".join(f"[S{1 + n % 2}] " + " ".join(f"[[sleep:0.4]] Turn {n} sentence {k} has a few words."
                                                      for k in range(3)) for n in range(8))

# Polls the turn list every 10 ms: which turn is highlighted, and when the stream was received whole.
WATCH_HIGHLIGHT = """() => {
  window.__highlights = [];
  window.__receivedAt = null;
  const panel = document.querySelector('#panel-dialogue');
  let last = undefined;
  setInterval(() => {
    const rows = panel.querySelectorAll('#dialogue-turns tr[data-state="speaking"]');
    const turn = rows.length ? rows[0].dataset.turn : null;
    if (rows.length > 1) window.__highlights.push({ at: performance.now(), turn: 'many' });
    const position = Number(panel.dataset.position);
    if (turn !== last) window.__highlights.push({ at: performance.now(), turn, position });
    last = turn;
    if (window.__receivedAt === null && panel.dataset.received === 'true') window.__receivedAt = performance.now();
  }, 10);
}"""


@pytest.fixture(scope="module")
def voiced(keyed_tone_server):
    """Two library voices that sound different on the tone engine."""
    for name, frequency in (("alice", 200.0), ("bob", 320.0)):
        answer = requests.post(keyed_tone_server.url("/v1/voices"), data={"name": name}, headers=AUTH, timeout=30,
                               files={"voice_file": ("ref.wav", reference_wav(frequency=frequency), "audio/wav")})
        assert answer.status_code in (200, 201), answer.text
    return keyed_tone_server


def active_jobs(server) -> int:
    return sum(slot["active_jobs"] for slot in server.health()["workers"]["slots"])


def open_dialogue(session):
    session.context.add_init_script(RECORD_AUDIO_GRAPH)
    page = session.open(key=API_KEY)
    page.click("#tab-dialogue")
    expect(page.locator("#panel-dialogue")).to_be_visible()
    return page


def labels(page) -> list[str]:
    return page.locator("#dialogue-speakers .speaker").evaluate_all("rows => rows.map((r) => r.dataset.label)")


def pick(page, label: str, voice: str) -> None:
    page.select_option(f'#dialogue-speakers .speaker[data-label="{label}"] select', voice)


def test_a_script_plays_turn_by_turn_with_the_heard_turn_highlighted(tone_page, voiced):
    page = open_dialogue(tone_page)
    expect(page.locator("#dialogue-speakers .speaker")).to_have_count(0)
    page.click("#dialogue-example")                          # the example has two speakers, three turns
    expect(page.locator("#dialogue-speakers .speaker")).to_have_count(2)
    page.fill("#dialogue-script", "[S2] first [S1] second\nSpeaker 3: third [SPEAKER3] [voice:alice] inline")
    assert labels(page) == ["S2", "S1", "Speaker 3"]
    expect(page.locator("#dialogue-inline")).to_have_text("Named in the script: alice.")

    page.fill("#dialogue-script", SCRIPT)
    assert labels(page) == ["S1", "S2"]
    library = page.locator("#dialogue-speakers .speaker").first.locator("optgroup[label=Library] option")
    expect(library).to_have_text(["alice", "bob"])
    pick(page, "S1", "alice")
    pick(page, "S2", "bob")
    page.fill("#dialogue-script", SCRIPT + " ")             # an edit keeps the voices chosen
    expect(page.locator('#dialogue-speakers .speaker[data-label="S1"] select')).to_have_value("alice")
    expect(page.locator('#panel-dialogue .field[data-param="gap_ms"] input')).to_have_value("300")
    page.fill('#panel-dialogue .field[data-param="seed"] input', str(SEED))
    page.evaluate(WATCH_HIGHLIGHT)

    with page.expect_request(lambda r: r.url.endswith("/v1/audio/dialogue")) as sent:
        page.click("#dialogue-play")
    body = sent.value.post_data_json
    assert body == {"input": SCRIPT + " ", "speakers": {"S1": "alice", "S2": "bob"}, "stream_format": "sse",
                    "response_format": "pcm", "gap_ms": 300, "seed": SEED}
    assert sent.value.headers["authorization"] == f"Bearer {API_KEY}"

    rows = page.locator("#dialogue-turns tr")
    expect(rows.nth(1)).to_have_attribute("data-state", "speaking", timeout=20000)
    tone_page.shoot("dialogue-playing")
    expect(page.locator("#panel-dialogue")).to_have_attribute("data-state", "done", timeout=30000)
    expect(rows.locator("td.voice")).to_have_text(["alice", "bob", "alice"])
    expect(rows.locator("td.text")).to_have_text(TEXTS)
    assert rows.evaluate_all("rows => rows.map((r) => r.dataset.state)") == ["heard"] * 3
    expect(page.locator("#dialogue-seed-used")).to_have_text(str(SEED))
    expect(page.locator("#dialogue-received")).to_have_text("3 of 3 turns")
    tone_page.shoot("dialogue-done")

    # The highlight went 0, 1, 2, each while that turn sounded: by playback, not by when events came
    # (the tone engine sends the whole stream in well under a second; the audio lasts about 5 s).
    highlights = page.evaluate("window.__highlights")
    assert "many" not in [h["turn"] for h in highlights], highlights
    order = [h["turn"] for h in highlights if h["turn"] is not None]
    assert order == ["0", "1", "2"], highlights
    starts = [float(t.split("–")[0]) for t in rows.locator("td.time").all_inner_texts()]
    ends = [float(t.split("–")[1]) for t in rows.locator("td.time").all_inner_texts()]
    first = {h["turn"]: h for h in highlights if h["turn"] is not None}
    for turn in ("1", "2"):
        assert starts[int(turn)] <= first[turn]["position"] < ends[int(turn)], highlights
    heard_for = (first["2"]["at"] - first["0"]["at"]) / 1000
    assert heard_for >= 0.9 * starts[2], (heard_for, starts, highlights)
    received_at = page.evaluate("window.__receivedAt")
    assert received_at is not None and received_at < first["2"]["at"], "the stream was not ahead of the playback"

    with page.expect_download() as download:                # the audio received, gaps included, as WAV
        page.click("#dialogue-download")
    wav = Path(download.value.path()).read_bytes()
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and int.from_bytes(wav[24:28], "little") == RATE
    samples = (len(wav) - 44) // 2
    assert abs(samples - ends[2] * RATE) <= 0.0005 * RATE + 1       # the server's end, rounded to 1 ms
    assert samples == sum(item["samples"] for item in page.evaluate("window.__scheduled"))
    direct = requests.post(voiced.url("/v1/audio/dialogue"), json={**body, "stream_format": "audio"},
                           headers=AUTH, timeout=60)
    assert direct.status_code == 200, direct.text
    assert wav[44:] == direct.content                       # the same seed: the same dialogue, sample for sample


def test_a_speaker_without_a_voice_gets_the_servers_error_next_to_the_script(tone_page, voiced):
    page = open_dialogue(tone_page)
    page.fill("#dialogue-script", SCRIPT)
    pick(page, "S1", "alice")                                # S2 has none
    with page.expect_response(lambda r: r.url.endswith("/v1/audio/dialogue")) as answer:
        page.click("#dialogue-play")
    assert answer.value.status == 400
    server_error = answer.value.json()["error"]
    assert server_error["param"] == "speakers"
    error = page.locator('#panel-dialogue .field[data-param="input"] .field-error')
    expect(error).to_contain_text('Speaker "S2" is not in the speakers table')
    assert error.inner_text() in server_error["message"].replace('input: speaker', 'Speaker')
    expect(page.locator("#dialogue-script")).to_have_attribute("aria-invalid", "true")
    unvoiced = page.locator('#dialogue-speakers .speaker[data-label="S2"] select')
    expect(unvoiced).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#panel-dialogue")).to_have_attribute("data-state", "error")
    expect(page.locator("#dialogue-turns tr")).to_have_count(0)
    expect(page.locator("#dialogue-no-turns")).to_be_visible()
    expect(page.locator("#dialogue-speaking")).to_have_text("–")
    expect(page.locator("#dialogue-download")).to_be_disabled()
    assert page.evaluate("window.__scheduled.length") == 0, "audio was played for a refused dialogue"
    tone_page.shoot("dialogue-error")

    pick(page, "S2", "bob")                                  # fixed: it plays, and the error is gone
    page.click("#dialogue-play")
    expect(page.locator("#panel-dialogue")).to_have_attribute("data-received", "true", timeout=20000)
    expect(error).to_be_empty()
    expect(page.locator("#dialogue-turns tr")).to_have_count(3)


def test_stop_silences_the_dialogue_and_the_server_ends_its_jobs(tone_page, voiced):
    page = open_dialogue(tone_page)
    page.fill("#dialogue-script", SLOW_SCRIPT)
    pick(page, "S1", "alice")
    pick(page, "S2", "bob")
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.endswith("/v1/audio/dialogue") else None)
    page.click("#dialogue-play")
    expect(page.locator("#dialogue-turns tr").first).to_have_attribute("data-state", "speaking", timeout=20000)
    assert active_jobs(voiced) >= 1                           # the later turns are still being made
    assert page.get_attribute("#panel-dialogue", "data-received") is None

    scheduled = page.evaluate("""() => {
      const count = window.__scheduled.length;
      document.querySelector('#dialogue-stop').click();
      return count;
    }""")
    expect(page.locator("#panel-dialogue")).to_have_attribute("data-state", "stopped")
    expect(page.locator("#dialogue-speaking")).to_have_text("stopped")
    expect(page.locator('#dialogue-turns tr[data-state="speaking"]')).to_have_count(0)
    expect(page.locator("#dialogue-turns tr").first).to_have_attribute("data-state", "stopped")
    expect(page.locator("#dialogue-stop")).to_be_disabled()
    deadline = time.monotonic() + 5
    while active_jobs(voiced) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert active_jobs(voiced) == 0, "the server went on synthesizing after Stop"
    assert failed, "the request was not aborted"
    time.sleep(1.5)                                          # later turns would be made in 1.2 s each
    assert page.evaluate("window.__scheduled.length") == scheduled, "audio was scheduled after Stop"
    assert page.locator("#dialogue-turns tr").count() < 8
    tone_page.shoot("dialogue-stopped")

    with page.expect_download() as download:                # what came before Stop, as WAV
        page.click("#dialogue-download")
    wav = Path(download.value.path()).read_bytes()
    assert wav[:4] == b"RIFF"
    assert (len(wav) - 44) // 2 == sum(item["samples"] for item in page.evaluate("window.__scheduled")) > 0
