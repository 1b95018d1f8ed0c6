"""Transports render the conversation log: SSE, NDJSON (chat responses) and WebSocket."""
