"""Data: the procedural world renderer (synthetic videos with exact cameras), records and pipelines."""
