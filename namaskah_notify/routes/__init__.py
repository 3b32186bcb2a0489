"""HTTP and WebSocket routes: thin functions that parse, call the dispatcher or store, and render."""
