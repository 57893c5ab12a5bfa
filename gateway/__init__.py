"""The API gateway: the IDE's one entry point; routes `/api/<target>/...` to the targets."""
