"""Pure-Python layer: imports neither textual nor torch at module import time."""
