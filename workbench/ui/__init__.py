"""Textual UI layer. Never imports torch: engine work runs in child processes."""
