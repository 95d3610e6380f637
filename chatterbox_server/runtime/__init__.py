"""The front worker's runtime: its clients of the model and Whisper workers, admission, progress, housekeeping,
draining and the gevent hub guards."""
