"""What protects the server from its callers: untrusted audio, API keys, Host/Origin checks, stream limits."""
