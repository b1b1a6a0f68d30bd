"""Conversations in tests: plain (role, content) pairs in, the workbench's Message tuples out."""

from __future__ import annotations

from workbench.core.data.messages import Conversation, Message


def pairs(messages: Conversation) -> tuple[tuple[str, str], ...]:
    return tuple((m.role, m.content) for m in messages)


def conversation(*turns: tuple[str, str]) -> Conversation:
    return tuple(Message(role, content) for role, content in turns)
