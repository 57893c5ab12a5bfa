"""messaging: channels, threads, reactions, mentions, unreads and search, with live events over
WebSocket (the Mattermost API v4's shapes), incoming webhooks and bot users."""
