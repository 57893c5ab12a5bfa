"""collaboration: shared documents as Yjs CRDTs, synced over WebSocket with the y-websocket protocol."""
