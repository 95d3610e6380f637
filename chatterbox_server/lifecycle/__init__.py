"""How a front worker stops: finishing its streams, turning new requests away with a Retry-After."""
