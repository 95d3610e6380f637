"""The streaming-input WebSocket protocols (ours and the vendors'), each a translator onto synthesis/realtime.py."""
