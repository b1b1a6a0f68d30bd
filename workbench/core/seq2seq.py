"""What an encoder-decoder reads: the source text of a prepared row (no torch; shared by the token-length
statistics, the trainer, evaluation and the playground).

The encoder reads the prompt as plain text, without a chat template (these models were never trained on
one): the system message and the turns before the answer, one per paragraph. A dialogue-summary prompt
(an instruction the workbench wrote, then the dialogue) is re-written the way each family was pre-trained
or is usually fine-tuned for summaries: T5 reads "summarize: <dialogue>" (its pre-training task prefix),
BART/KoBART the dialogue alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.core.data.messages import Message
from workbench.core.data.schema import SUMMARY_INSTRUCTIONS

# The summary source of each encoder-decoder family, around the dialogue.
SUMMARY_PREFIX = {"t5": "summarize: ", "bart": ""}
_INSTRUCTIONS = frozenset(text for phrasings in SUMMARY_INSTRUCTIONS.values() for text in phrasings)


def summary_dialogue(prompt: str) -> str | None:
    """The dialogue of a prompt the dialogue-summary schema wrote (instruction, blank line, dialogue)."""
    instruction, separator, dialogue = prompt.partition("\n\n")
    return dialogue if separator and instruction in _INSTRUCTIONS and dialogue.strip() else None


def source_text(messages: Sequence[Message], family: str | None = None) -> str:
    """The encoder's input: every message before the answer, as paragraphs; a dialogue-summary prompt in the
    family's own form (see the module docstring)."""
    before = [m.content for m in messages[:-1] if m.content]
    if family in SUMMARY_PREFIX and len(before) == 1:
        dialogue = summary_dialogue(before[0])
        if dialogue is not None:
            return SUMMARY_PREFIX[family] + dialogue
    return "\n\n".join(before)
