"""ElevenLabs-shaped HTTP endpoints (their sockets are in api/realtime/elevenlabs.py)."""
