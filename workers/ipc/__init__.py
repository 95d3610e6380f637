"""What crosses the process boundary between front workers and model or Whisper workers: the messages, the shared
board and the outbox. Standard library only."""
