"""Engine layer: torch / transformers / peft / trl / bitsandbytes. Runs only in child processes."""
