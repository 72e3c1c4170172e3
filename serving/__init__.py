"""The online Python API: load a published artifact and answer top-k lookups."""
