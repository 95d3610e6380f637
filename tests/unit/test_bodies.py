"""bodies.form_fields: a multipart part without a field name is a 400 that says so, never a 500."""
from __future__ import annotations

import pytest
from flask import Flask

from chatterbox_server.api.bodies import form_fields
from chatterbox_server.errors import ApiError

BOUNDARY = "b0und"


def multipart(*parts: bytes) -> bytes:
    return b"".join(b"--" + BOUNDARY.encode() + b"\r\n" + part + b"\r\n" for part in parts) + \
        b"--" + BOUNDARY.encode() + b"--\r\n"


@pytest.mark.parametrize("nameless", [
    b'Content-Disposition: form-data\r\n\r\nvalue',                        # no name at all
    b'Content-Disposition: form-data; name=""\r\n\r\nvalue',               # an empty name
])
def test_a_part_without_a_name_is_a_400(nameless):
    body = multipart(b'Content-Disposition: form-data; name="text"\r\n\r\nhello', nameless)
    with Flask(__name__).test_request_context("/", method="POST", data=body,
                                              content_type=f"multipart/form-data; boundary={BOUNDARY}"):
        with pytest.raises(ApiError) as caught:
            form_fields(("voice_file",))
    assert caught.value.status == 400 and "no field name" in caught.value.message


def test_named_parts_are_read():
    body = multipart(b'Content-Disposition: form-data; name="text"\r\n\r\nhello')
    with Flask(__name__).test_request_context("/", method="POST", data=body,
                                              content_type=f"multipart/form-data; boundary={BOUNDARY}"):
        assert form_fields(("voice_file",)) == {"text": "hello"}
