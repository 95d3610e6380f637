"""The web app's Live panel in Chromium: text streamed into our realtime socket as it is typed or
replayed like an LLM's tokens, audio played before the turn ends, and Stop as barge-in.

The browser, page and server fixtures are test_web_app's."""
from __future__ import annotations

import re
import time

import test_web_app as web
from test_web_app import API_KEY, RECORD_AUDIO_GRAPH, expect

pytestmark = web.pytestmark
# test_web_app's fixtures, under their names here
browser, keyed_tone_server, hibari_page, tone_page = web.browser, web.keyed_tone_server, web.hibari_page, web.tone_page

# Records every JSON message the page sends on a socket, and every socket's URL.
RECORD_SOCKET = """
window.__sent = [];
window.__sockets = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (typeof data === "string") window.__sent.push({ at: performance.now(), ...JSON.parse(data) });
  return send.call(this, data);
};
const Native = WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) { super(...args); window.__sockets.push(String(args[0])); }
};
"""
SLOW_TURN = " ".join(f"[[sleep:0.5]] Sentence number {n} is here." for n in range(10))


def sent(page, kind: str) -> list[dict]:
    return page.evaluate("(kind) => window.__sent.filter((m) => m.type === kind)", kind)


def active_jobs(server) -> int:
    return sum(slot["active_jobs"] for slot in server.health()["workers"]["slots"])


def open_live(session, key: str | None = None):
    session.context.add_init_script(RECORD_AUDIO_GRAPH)
    session.context.add_init_script(RECORD_SOCKET)
    page = session.open(key=key)
    page.click("#tab-live")
    return page


def test_typed_text_is_spoken_before_the_turn_ends(hibari_page):
    page = open_live(hibari_page)
    expect(page.locator("#live-socket")).to_have_text("closed")
    box = page.locator("#live-text")
    box.press_sequentially("Hello there, this is typed live, and I keep on typing", delay=15)
    expect(page.locator("#live-socket")).to_have_text(re.compile(r"^open · hibari"))
    page.wait_for_selector("#panel-live[data-first-audio-ms]", timeout=20000)

    assert page.evaluate("window.__scheduled.length") >= 1       # audio is on the graph ...
    assert sent(page, "input_text.done") == []                   # ... and the turn is still open
    appends = sent(page, "input_text.append")
    assert len(appends) > 20 and {m["context_id"] for m in appends} == {"turn-1"}   # an append per keystroke
    assert "".join(m["text"] for m in appends).startswith("Hello there, this is typed live")
    [create] = sent(page, "context.create")
    assert create["context_id"] == "turn-1" and create["session"]["speed"] == 1
    expect(page.locator("#live-latency")).to_have_text(re.compile(r"^\d+ ms$"))
    assert 0 < int(page.get_attribute("#panel-live", "data-first-audio-ms")) < 10000

    box.press_sequentially(".", delay=15)
    page.click("#live-end")
    expect(page.locator("#panel-live")).to_have_attribute("data-state", "done", timeout=30000)
    expect(page.locator("#live-turn")).to_have_text("turn-1 finished")
    assert len(sent(page, "input_text.done")) == 1
    assert page.evaluate("window.__sockets.length") == 1
    assert "api_key" not in page.evaluate("window.__sockets[0]")  # no key set: none sent
    hibari_page.shoot("live")


def test_replay_as_an_llm_sends_words_over_time_and_speaks_before_the_last(hibari_page):
    page = open_live(hibari_page)
    words = ("Streaming input speech starts speaking while the language model is still writing its answer, "
             "one word after another, at the pace it writes them, and it ends when the model has nothing more to say "
             "about the matter at hand today.").split()
    page.click("#panel-live summary")
    page.fill("#live-replay-text", " ".join(words))
    page.fill('#panel-live .field[data-param="rate"] input', "10")
    page.click("#live-replay")
    expect(page.locator("#live-turn")).to_contain_text("word ")
    expect(page.locator("#panel-live")).to_have_attribute("data-state", "done", timeout=40000)

    appends = sent(page, "input_text.append")
    assert [m["text"].strip() for m in appends] == words
    span = (appends[-1]["at"] - appends[0]["at"]) / 1000
    assert span >= 0.9 * (len(words) - 1) / 10, span               # ten words a second, not all at once
    [done] = sent(page, "input_text.done")
    assert done["at"] >= appends[-1]["at"]                          # the replay ends the turn itself
    first_audio = page.evaluate("window.__scheduled[0].at")
    assert first_audio < appends[-1]["at"], "no audio before the last word was sent"
    expect(page.locator("#live-text")).to_have_value("")


def test_stop_cancels_the_turn_at_once_and_a_new_turn_gets_a_new_context(tone_page, keyed_tone_server):
    page = open_live(tone_page, key=API_KEY)
    page.fill("#live-text", SLOW_TURN)                   # one input event: one append
    page.wait_for_selector("#panel-live[data-first-audio-ms]", timeout=20000)
    expect(page.locator("#panel-live")).to_have_attribute("data-state", "speaking")
    assert f"api_key={API_KEY}" in page.evaluate("window.__sockets[0]")   # the key rides in the query
    assert active_jobs(keyed_tone_server) >= 1

    scheduled = page.evaluate("""() => {
      const count = window.__scheduled.length;
      document.querySelector('#live-stop').click();
      return count;
    }""")
    expect(page.locator("#live-turn")).to_have_text("turn-1 cancelled", timeout=5000)
    expect(page.locator("#panel-live")).to_have_attribute("data-state", "cancelled")
    [cancel] = sent(page, "context.cancel")
    assert cancel["context_id"] == "turn-1"
    deadline = time.monotonic() + 5
    while active_jobs(keyed_tone_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert active_jobs(keyed_tone_server) == 0, "the server went on synthesizing after Stop"
    time.sleep(1.0)
    assert page.evaluate("window.__scheduled.length") == scheduled, "audio was scheduled after Stop"
    expect(page.locator("#panel-live")).to_have_attribute("data-playing", "false")
    expect(page.locator("#live-playing")).to_have_text("–")

    page.fill("#live-text", "A new turn.")
    page.click("#live-end")
    expect(page.locator("#live-turn")).to_have_text("turn-2 finished", timeout=20000)
    assert {m["context_id"] for m in sent(page, "input_text.append")} == {"turn-1", "turn-2"}
    assert page.evaluate("window.__scheduled.length") > scheduled
    assert page.evaluate("window.__sockets.length") == 1           # one socket for the live session


def test_a_bad_speed_is_shown_next_to_its_field_and_the_socket_stays_open(tone_page):
    page = open_live(tone_page, key=API_KEY)
    page.fill('#panel-live .field[data-param="speed"] input[type=number]', "99")
    page.fill("#live-text", "Too fast.")
    error = page.locator('#panel-live .field[data-param="speed"] .field-error')
    expect(error).not_to_be_empty()
    expect(page.locator("#panel-live")).to_have_attribute("data-state", "error")
    expect(page.locator("#live-socket")).to_have_text(re.compile(r"^open"))
    page.fill('#panel-live .field[data-param="speed"] input[type=number]', "1")
    page.fill("#live-text", "Right speed.")
    page.click("#live-end")
    expect(page.locator("#live-turn")).to_have_text("turn-2 finished", timeout=20000)
    expect(error).to_be_empty()
