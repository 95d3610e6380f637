"""Our realtime socket (/v1/audio/speech/realtime) against real servers: turns streamed in as an
LLM writes them, flushes, barge-in, many contexts, limits and hostile input."""
from __future__ import annotations

import base64
import json
import signal
import socket
import threading
import time

import numpy as np
import pytest
import requests
from realtimekit import RealtimeClient, ws_url
from serverkit import start_server
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.server
PATH = "/v1/audio/speech/realtime"
TURN = "Hello there, this is a streamed turn. It keeps going for a little while. And then it ends."


def client(server, query: str = "", base: str | None = None, **kwargs) -> RealtimeClient:
    c = RealtimeClient(ws_url(base or server.base, PATH) + query, **kwargs)
    assert c.until_type("session.created")["engine"]
    return c


def stream_words(c: RealtimeClient, text: str, context_id: str = "default") -> None:
    for word in text.split(" "):
        c.send("input_text.append", context_id=context_id, text=word + " ")


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def test_a_turn_streamed_word_by_word_comes_back_as_audio_with_honest_usage(hibari_server):
    c = client(hibari_server)
    try:
        stream_words(c, TURN)
        c.send("input_text.done")
        done = c.until_type("speech.audio.done")
        audio = c.received.audio()
        assert len(audio) > 24000 * 2 * 2                       # several seconds of speech
        assert np.abs(pcm(audio)).max() > 1000                 # not silence
        assert done["usage"]["audio_seconds"] == pytest.approx(len(audio) / 2 / 24000, abs=0.01)
        assert done["usage"]["input_characters"] > 0.9 * len(TURN.replace(" ", ""))
        assert done["usage"]["segments"] >= 2                  # the first segment went out early
        sequences = [e["sequence"] for e in c.received.of("speech.audio.delta")]
        assert sequences == list(range(len(sequences)))
    finally:
        c.close()


def test_the_first_segment_goes_out_before_the_turn_is_complete(hibari_server):
    c = client(hibari_server)
    try:
        stream_words(c, "Hello there, I am thinking")    # no sentence end, no done: only the clause
        first = c.until_type("speech.audio.delta", timeout=10)
        assert first["context_id"] == "default"
        c.send("context.cancel")
        c.until_type("context.cancelled")
    finally:
        c.close()


def test_the_same_seed_and_text_give_the_same_audio(hibari_server):
    audios = []
    for _ in range(2):
        c = client(hibari_server, "?seed=42")
        try:
            stream_words(c, TURN)
            c.send("input_text.done")
            c.until_type("speech.audio.done")
            audios.append(c.received.audio())
        finally:
            c.close()
    assert audios[0] == audios[1]


def test_flush_is_answered_after_the_audio_of_the_flushed_text_and_the_turn_stays_open(hibari_server):
    c = client(hibari_server)
    try:
        c.send("input_text.append", text="Half a thought without an end")
        c.send("input_text.flush", flush_id=7)
        flushed = c.until_type("input_text.flushed")
        assert flushed["flush_id"] == 7
        before = len(c.received.audio())
        assert before > 0
        c.send("input_text.append", text=" and then the rest of it.")
        c.send("input_text.done")
        c.until_type("speech.audio.done")
        assert len(c.received.audio()) > before
    finally:
        c.close()


def test_cancel_is_acknowledged_and_no_audio_of_that_context_follows_while_the_socket_goes_on(tone_server):
    c = client(tone_server)
    try:
        slow = " ".join(f"[[sleep:0.4]] Sentence number {n} is here." for n in range(8))
        c.send("input_text.append", context_id="a", text=slow)
        c.send("input_text.done", context_id="a")
        c.until_type("speech.audio.delta", "a")
        sent = time.monotonic()
        c.send("context.cancel", context_id="a")
        ack = c.until_type("context.cancelled", "a")
        assert time.monotonic() - sent < 1.0
        assert ack["reason"]
        after = c.received.index("context.cancelled", "a")
        c.send("input_text.append", context_id="b", text="A new turn.")
        c.send("input_text.done", context_id="b")
        c.until_type("speech.audio.done", "b")
        c.drain(1.5)
        later = c.received.events[after + 1:]
        assert not [e for e in later if e.get("context_id") == "a"]
        assert c.received.audio("b")
        assert not c.received.of("speech.audio.done", "a")
    finally:
        c.close()


def test_a_cancelled_turn_stops_synthesis_in_the_model_worker(tone_server):
    def synthesized() -> float:
        text = requests.get(tone_server.url("/metrics"), timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("chatterbox_audio_seconds_total"))
    c = client(tone_server)
    try:
        slow = " ".join(f"[[sleep:0.3]] Part {n} of a long answer." for n in range(10))
        c.send("input_text.append", text=slow)
        c.send("input_text.done")
        c.until_type("speech.audio.delta")
        c.send("context.cancel")
        c.until_type("context.cancelled")
        time.sleep(1.0)
        made = synthesized()
        time.sleep(1.5)
        assert synthesized() == made            # nothing more was made for the cancelled turn
        slots = tone_server.health()["workers"]["slots"]
        assert sum(slot["active_jobs"] for slot in slots) == 0
    finally:
        c.close()


def test_eight_contexts_with_their_own_settings_each_finish(hibari_server):
    c = client(hibari_server)
    try:
        for n in range(8):
            c.send("context.create", context_id=f"c{n}", session={"speed": 0.8 + n * 0.1, "seed": n + 1})
        created = [c.until_type("context.created", f"c{n}") for n in range(8)]
        assert [e["seed"] for e in created] == list(range(1, 9))
        for n in range(8):
            c.send("input_text.append", context_id=f"c{n}", text=f"Turn number {n}.")
            c.send("input_text.done", context_id=f"c{n}")
        for n in range(8):
            c.until_type("speech.audio.done", f"c{n}")
        lengths = [len(c.received.audio(f"c{n}")) for n in range(8)]
        assert all(lengths)
        assert lengths[0] > lengths[7]                          # speed 0.8 is slower than 1.5
    finally:
        c.close()


def test_a_context_over_the_cap_closes_the_oldest_idle_one_never_the_socket(tmp_path):
    server = start_server(tmp_path, engine="hibari", front_workers="1", realtime_max_contexts="2")
    try:
        c = client(server)
        c.send("context.create", context_id="old")
        c.until_type("context.created", "old")
        c.send("context.create", context_id="newer")
        c.until_type("context.created", "newer")
        c.send("context.create", context_id="third")
        evicted = c.until_type("context.cancelled", "old")
        assert "room" in evicted["reason"]
        c.until_type("context.created", "third")
        c.send("input_text.append", context_id="third", text="Still here.")
        c.send("input_text.done", context_id="third")
        c.until_type("speech.audio.done", "third")
        # rapid barge-ins leave no zombie: open and cancel many, the socket still serves
        for n in range(30):
            c.send("input_text.append", context_id=f"z{n}", text="Interrupted right away, ")
            c.send("context.cancel", context_id=f"z{n}")
        for n in range(30):
            c.until_type("context.cancelled", f"z{n}")
        c.send("input_text.append", context_id="last", text="The end.")
        c.send("input_text.done", context_id="last")
        c.until_type("speech.audio.done", "last")
        c.close()
    finally:
        server.stop()


def test_bad_messages_get_error_events_naming_the_problem_and_the_socket_goes_on(hibari_server):
    c = client(hibari_server)
    try:
        c.send_raw("not json")
        assert c.until_type("error")["error"]["code"] == "invalid_json"
        c.send_raw("[1, 2]")
        assert c.until_type("error")["error"]["code"] == "invalid_json"
        c.send("no.such.event")
        error = c.until_type("error")["error"]
        assert error["code"] == "unknown_event" and error["param"] == "type"
        c.send("session.update", session={"speed": 9})
        error = c.until_type("error")["error"]
        assert error["param"] == "session.speed" and error["status"] == 400
        c.send("session.update", session={"response_format": "wav"})
        assert c.until_type("error")["error"]["param"] == "session.response_format"
        c.send("input_text.append", text=5)
        assert c.until_type("error")["error"]["param"] == "text"
        c.send("input_text.flush", context_id="nobody")
        error = c.until_type("error")
        assert error["context_id"] == "nobody" and error["error"]["code"] == "context_not_found"
        c.send("context.create", session={"voice": "no-such-voice"})
        assert c.until_type("error")["error"]["code"] == "voice_not_found"
        c.send("input_text.append", text="Still speaking.")
        c.send("input_text.done")
        c.until_type("speech.audio.done")
    finally:
        c.close()


def test_bad_query_options_are_refused_with_an_error_event(hibari_server):
    c = RealtimeClient(ws_url(hibari_server.base, PATH) + "?sample_rate=12345")
    error = c.until_type("error")
    assert error["error"]["param"] == "query: sample_rate"
    code, _ = c.wait_closed()
    assert code == 1008


def test_message_size_and_text_limits(tmp_path):
    server = start_server(tmp_path, engine="hibari", front_workers="1", realtime_max_message_bytes="1000",
                          realtime_max_context_chars="50")
    try:
        c = client(server)
        c.send("input_text.append", text="x" * 2000)
        assert c.until_type("error")["error"]["code"] == "message_too_big"
        c.send("input_text.append", text="Short enough. ")
        c.send("input_text.append", text="This one pushes the context over fifty characters.")
        error = c.until_type("error")
        assert error["error"]["code"] == "context_too_long" and error["context_id"] == "default"
        c.send("input_text.done")
        c.until_type("speech.audio.done")              # what was accepted is still spoken
        assert c.received.audio()
        c.send_raw(json.dumps({"type": "input_text.append", "text": "y" * 20_000}))
        code, _ = c.wait_closed()
        assert code == 1009
    finally:
        server.stop()


def test_an_idle_socket_is_closed_after_the_timeout(tmp_path):
    server = start_server(tmp_path, engine="hibari", front_workers="1", realtime_idle_timeout="1.5")
    try:
        c = client(server)
        started = time.monotonic()
        code, reason = c.wait_closed(timeout=10)
        assert code == 1000 and "1.5" in reason
        assert 1.4 < time.monotonic() - started < 5
    finally:
        server.stop()


def test_binary_frames_follow_their_delta_event(hibari_server):
    c = client(hibari_server, "?binary=true&response_format=mulaw")
    try:
        c.send("input_text.append", text="Binary audio please.")
        c.send("input_text.done")
        done_seen = False
        frames = []
        while not done_seen:
            message = c.next()
            if isinstance(message, dict) and message["type"] == "speech.audio.delta":
                assert "audio" not in message
                data = c.next()
                assert isinstance(data, bytes) and len(data) == message["bytes"]
                frames.append(data)
            elif isinstance(message, dict) and message["type"] == "speech.audio.done":
                done_seen = True
        total = sum(map(len, frames))
        done = c.received.of("speech.audio.done")[0]
        assert total == pytest.approx(done["usage"]["audio_seconds"] * 8000, rel=0.02)   # one byte a sample
    finally:
        c.close()


def test_the_socket_answers_on_the_extended_port_and_at_the_root(hibari_server):
    for base, path in ((hibari_server.extended_base, PATH), (hibari_server.base, "/audio/speech/realtime")):
        c = RealtimeClient(ws_url(base, path))
        try:
            assert c.until_type("session.created")
        finally:
            c.close()


def test_a_client_that_disconnects_cancels_its_turns(tone_server):
    c = client(tone_server)
    slow = " ".join(f"[[sleep:0.3]] Chunk {n} of a long answer." for n in range(10))
    c.send("input_text.append", context_id="a", text=slow)
    c.send("input_text.append", context_id="b", text=slow)
    c.send("input_text.done", context_id="a")
    c.send("input_text.done", context_id="b")
    c.until_type("speech.audio.delta")
    c.ws.socket.close()                             # gone without a close frame
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if sum(slot["active_jobs"] for slot in tone_server.health()["workers"]["slots"]) == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(tone_server.health())


def test_api_keys_are_taken_from_the_vendor_headers_and_the_query(tmp_path):
    server = start_server(tmp_path, engine="hibari", front_workers="1", api_key="sekret")
    try:
        with pytest.raises(InvalidStatus) as refused:
            RealtimeClient(ws_url(server.base, PATH))
        assert refused.value.response.status_code == 401
        for headers, query in (({"Authorization": "Bearer sekret"}, ""), ({"Authorization": "Token sekret"}, ""),
                               ({"xi-api-key": "sekret"}, ""), ({"X-API-Key": "sekret"}, ""), ({}, "?api_key=sekret")):
            c = RealtimeClient(ws_url(server.base, PATH) + query, headers=headers)
            assert c.until_type("session.created")
            c.close()
        # a key in the query of a plain HTTP request is not a key
        assert requests.get(server.url("/v1/models?api_key=sekret"), timeout=5).status_code == 401
    finally:
        server.stop()


def test_a_full_server_refuses_a_socket_with_a_retry_hint_and_1013(tmp_path):
    server = start_server(tmp_path, engine="tone", front_workers="1", model_workers="1", max_queued_jobs="1",
                          graceful_timeout="5")
    try:
        holder = threading.Thread(target=requests.post, args=(server.url("/v1/audio/speech"),),
                                  kwargs={"json": {"input": "[[sleep:4]] Holding the only slot."}, "timeout": 30})
        holder.start()
        server.wait_until(lambda report: sum(s["active_jobs"] for s in report["workers"]["slots"]) >= 1, 10)
        c = RealtimeClient(ws_url(server.base, PATH))
        error = c.until_type("error")
        assert error["error"]["status"] == 429 and error["error"]["retry_after"] >= 1
        code, _ = c.wait_closed()
        assert code == 1013
        holder.join()
    finally:
        server.stop()


def test_base64_audio_decodes_to_the_declared_rate(hibari_server):
    c = client(hibari_server, "?sample_rate=16000")
    try:
        c.send("input_text.append", text="Sixteen kilohertz.")
        c.send("input_text.done")
        done = c.until_type("speech.audio.done")
        audio = b"".join(base64.b64decode(e["audio"]) for e in c.received.of("speech.audio.delta"))
        assert len(audio) / 2 == pytest.approx(done["usage"]["audio_seconds"] * 16000, rel=0.02)
    finally:
        c.close()


def test_a_slow_reader_gets_back_pressure_and_then_everything(tmp_path):
    """With the look-ahead out of the way, only the socket's back-pressure holds synthesis back."""
    server = start_server(tmp_path, engine="hibari", front_workers="1", realtime_lookahead_seconds="100000")

    def synthesized() -> float:
        text = requests.get(server.url("/metrics"), timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("chatterbox_audio_seconds_total"))
    sock = socket.create_connection(("127.0.0.1", int(server.base.rsplit(":", 1)[1])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    c = RealtimeClient(ws_url(server.base, PATH) + "?sample_rate=48000&segmentation=sentence", sock=sock,
                       max_queue=1)
    try:
        c.until_type("session.created")
        sentences = [f"This is sentence number {n}, which carries a handful of words." for n in range(60)]
        before = synthesized()
        c.send("input_text.append", text=" ".join(sentences))
        c.send("input_text.done")
        time.sleep(4.0)         # read nothing: hibari could make all of it by now (but for the kernel's buffers)
        made_while_stalled = synthesized() - before
        done = c.until_type("speech.audio.done", timeout=120)
        total = done["usage"]["audio_seconds"]
        assert total > 200
        assert made_while_stalled < 0.5 * total, (made_while_stalled, total)
        assert len(c.received.audio()) / 2 / 48000 == pytest.approx(total, abs=0.05)     # nothing lost
    finally:
        c.close()
        server.stop()


def test_a_stopping_server_finishes_the_turn_in_progress_then_closes_with_1001(tmp_path):
    server = start_server(tmp_path, engine="tone", front_workers="1", model_workers="1", graceful_timeout="20")
    try:
        c = client(server)
        c.send("input_text.append", text=" ".join(f"[[sleep:0.4]] Part {n} of the answer." for n in range(4)))
        c.send("input_text.done")
        c.until_type("speech.audio.delta")
        server.process.send_signal(signal.SIGTERM)
        done = c.until_type("speech.audio.done", timeout=20)
        assert done["usage"]["segments"] == 4
        code, _ = c.wait_closed(timeout=10)
        assert code == 1001
    finally:
        server.stop()


def test_a_socket_counts_as_one_stream_of_its_key(tmp_path):
    server = start_server(tmp_path, engine="hibari", front_workers="1", api_key="sekret", max_streams_per_key="1")
    try:
        first = RealtimeClient(ws_url(server.base, PATH) + "?api_key=sekret")
        first.until_type("session.created")
        with pytest.raises(InvalidStatus) as refused:
            RealtimeClient(ws_url(server.base, PATH) + "?api_key=sekret")
        assert refused.value.response.status_code == 429
        first.close()
        time.sleep(0.5)
        again = RealtimeClient(ws_url(server.base, PATH) + "?api_key=sekret")
        again.until_type("session.created")
        again.close()
    finally:
        server.stop()
