"""The OpenAI-style API family: /v1/audio/speech and the routes its clients use beside it (the voice library,
long-text jobs, status, history, info, memory, the path aliases)."""
