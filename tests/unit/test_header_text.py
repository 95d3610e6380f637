"""Headers that carry error text, client text or file names: one line, ASCII, bounded."""
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.datastructures import Headers

from chatterbox_server.text.header_text import HEADER_LIMIT, attachment, header_value, joined


def test_a_multi_line_error_becomes_one_line():
    message = "Whisper 'medium' cannot run here: cannot find the model\nTraceback:\n  line 1\r\n"
    assert header_value(message) == "Whisper 'medium' cannot run here: cannot find the model Traceback: line 1"


def test_long_text_is_cut_with_an_ellipsis():
    value = header_value("x" * 1000)
    assert len(value) == HEADER_LIMIT and value.endswith("...")


def test_non_ascii_is_escaped_not_lost():
    assert header_value("voix fran\u00e7aise \u2028 \u65e5") == "voix fran\\xe7aise \\u65e5"


def test_joined_list_of_hostile_names():
    assert joined(["a\nb", "c\x00d"]) == "a b,c d"


def test_attachment_keeps_the_exact_name_for_modern_clients():
    assert attachment("speech.wav") == 'attachment; filename="speech.wav"'
    value = attachment('r\u00e9sum\u00e9 "1".wav')
    assert value.startswith('attachment; filename="r_xe9sum_xe9 _1_.wav"')
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.wav" in value


@given(st.text())
def test_werkzeug_accepts_every_value(text):
    headers = Headers()
    headers["X-Test"] = header_value(text)
    headers["Content-Disposition"] = attachment(text or "x")
    assert "\n" not in headers["X-Test"] and len(headers["X-Test"]) <= HEADER_LIMIT
    headers["X-Test"].encode("ascii")
