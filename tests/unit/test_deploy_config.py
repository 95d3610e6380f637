"""Static checks of the shipped deployment files against the server's own settings."""
from __future__ import annotations

import re
from pathlib import Path

from chatterbox_server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SITE = (ROOT / "config" / "nginx" / "chatterbox-server.conf").read_text()


def seconds(directive: str) -> float:
    return float(re.search(rf"^\s*{directive}\s+(\d+)s;", SITE, re.MULTILINE).group(1))


def test_nginx_waits_longer_than_the_server_so_the_server_words_every_timeout():
    defaults = Settings()
    longest_silence = max(defaults.queue_timeout, defaults.chunk_timeout)
    assert seconds("proxy_read_timeout") >= longest_silence + 30
    assert seconds("proxy_send_timeout") >= longest_silence + 30
