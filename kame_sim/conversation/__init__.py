"""Recorded conversations in the canonical KAME dataset layout.

``dataset_dir/audio/<id>.wav`` is a stereo recording (channel 0 = speaker A, the user; channel 1 =
speaker B, the role the KAME front-end plays), ``dataset_dir/text/<id>.json`` its word-level
transcript and ``dataset_dir/oracle_raw/<id>.json`` (optional) the back-end predictions recorded
for it. :func:`load_conversation` validates all three and returns an immutable
:class:`Conversation` resampled to the simulator's rate. The audio is decoded and resampled when it
is first read (the header is checked at load), since most runs never read it.

Rules adapted to what the real (SpokenWOZ) files guarantee:

* transcript words are sorted by start **per speaker**, not globally (turns are listed in order
  and overlapping turns interleave); :attr:`Conversation.words` is sorted globally by the loader;
* one speaker's words may overlap in time (nested alignments), so no non-overlap rule exists;
* a word may end up to 0.05 s past the end of the audio;
* oracle_raw stores ``timestamp_ms``; it is exposed as :attr:`OraclePrediction.timestamp_s`;
* words with empty/whitespace-only text are validated, then dropped silently.
"""

from __future__ import annotations

from kame_sim.conversation.loader import content_hash, list_conversations, load_conversation
from kame_sim.conversation.model import DEFAULT_FRAME_SAMPLES, Conversation, OraclePrediction, Word
from kame_sim.conversation.transcript import END_TOLERANCE_S
from kame_sim.conversation.utterances import user_utterances

__all__ = [
    "DEFAULT_FRAME_SAMPLES",
    "END_TOLERANCE_S",
    "Conversation",
    "OraclePrediction",
    "Word",
    "content_hash",
    "list_conversations",
    "load_conversation",
    "user_utterances",
]
