"""The conversation text the LLM sees, built as KAME builds it."""

from __future__ import annotations

from kame_sim.policy.conversation_log import ConversationLog


def test_lines_per_speaker_and_pieces_kept_apart_as_kame_does():
    log = ConversationLog()
    log.add("user", "hello there")
    for piece in (" hi", " how", " ca", "n", " i"):
        log.add_piece(piece)
    log.add("user", "a table")
    log.add("user", "for two")
    assert log.text() == "user: hello there \nmoshi: hi how ca n i \nuser: a table for two "


def test_blank_text_is_ignored():
    log = ConversationLog()
    log.add("user", "   ")
    assert log.text() == ""
