"""The request metrics (prometheus_client objects); /metrics is served by chatterbox_server.api.metrics."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

SPEECH_REQUESTS = Counter("chatterbox_speech_requests_total", "Speech requests by endpoint and outcome",
                          ["endpoint", "outcome"])
AUDIO_SECONDS = Counter("chatterbox_audio_seconds_total", "Seconds of audio synthesized for clients")
REALTIME_SOCKETS = Counter("chatterbox_realtime_sockets_total", "Realtime sockets opened, by protocol",
                           ["protocol"])
REALTIME_CONTEXTS = Counter("chatterbox_realtime_contexts_total", "Realtime contexts (turns) by how they ended",
                            ["outcome"])
FIRST_AUDIO = Histogram("chatterbox_time_to_first_audio_seconds", "From admission to the first audio chunk",
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
