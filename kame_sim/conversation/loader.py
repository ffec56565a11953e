"""Find and load conversations stored in the canonical KAME dataset layout.

``dataset_dir/audio/<id>.wav`` (stereo: channel 0 = ``speakers[0]``, channel 1 = ``speakers[1]``),
``dataset_dir/text/<id>.json`` (word list) and, optionally, ``dataset_dir/oracle_raw/<id>.json``
(recorded predictions). Every problem with those files surfaces as one :class:`InputError` line
naming the file and the field; see :mod:`.transcript` and :mod:`.oracle_raw` for the rules, and
for where they had to follow what the real SpokenWOZ files guarantee rather than an ideal.

Each file is read from disk once: the bytes are hashed (so a trace records exactly which data it
came from) and then parsed from memory. The wav's header is checked here (format, channels, rate,
a whole data chunk, not empty); its samples are decoded and resampled only when something reads
:attr:`Conversation.audio` (:class:`LazyAudio`). So a run that never reads the audio (behavioural
front-end, simulated STT) never decodes it, and NaN or infinite samples are refused when the audio
is first read: for runs that need it, before their run directory is made
(:func:`kame_sim.runner.build_session_parts`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kame_sim.conversation import hash_memo
from kame_sim.conversation.audio import LazyAudio, read_wav_info
from kame_sim.conversation.hash_memo import ABSENT, FileKey
from kame_sim.conversation.model import Conversation
from kame_sim.conversation.oracle_raw import parse_oracle_raw
from kame_sim.conversation.transcript import parse_transcript
from kame_sim.errors import InputError

AUDIO_DIR, TEXT_DIR, ORACLE_DIR = "audio", "text", "oracle_raw"


def list_conversations(dataset_dir: Path) -> list[str]:
    """Sorted ids that have both ``audio/<id>.wav`` and ``text/<id>.json``."""
    dataset_dir = _check_dataset_dir(dataset_dir)
    audio_dir, text_dir = dataset_dir / AUDIO_DIR, dataset_dir / TEXT_DIR
    if not audio_dir.is_dir() or not text_dir.is_dir():
        return []
    audio_ids = {p.stem for p in audio_dir.glob("*.wav") if p.is_file()}
    return sorted(i for i in audio_ids if (text_dir / f"{i}.json").is_file())


def load_conversation(
    dataset_dir: Path,
    conversation_id: str | None = None,
    *,
    sample_rate: int = 24000,
    speakers: tuple[str, str] = ("A", "B"),
    require_oracle: bool = False,
) -> Conversation:
    """Load and validate one conversation, resampled to ``sample_rate`` (on first use, see above).

    With ``conversation_id=None`` the dataset must hold exactly one conversation (convenient for
    single-conversation demo folders; with several, guessing would make runs unreproducible).
    ``require_oracle`` turns a missing oracle_raw file into an error, for scenarios that replay it.
    """
    dataset_dir = _check_dataset_dir(dataset_dir)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError(None, "sample_rate", f"must be a positive integer, got {sample_rate!r}")
    speakers = _check_speakers(speakers)
    conversation_id = _resolve_id(dataset_dir, conversation_id)

    audio_path = dataset_dir / AUDIO_DIR / f"{conversation_id}.wav"
    text_path = dataset_dir / TEXT_DIR / f"{conversation_id}.json"
    oracle_path = dataset_dir / ORACLE_DIR / f"{conversation_id}.json"
    audio_bytes, audio_key = _read(audio_path, "audio", dataset_dir)
    text_bytes, text_key = _read(text_path, "transcript", dataset_dir)
    oracle_bytes: bytes | None = None
    oracle_key: FileKey | None = ABSENT
    if oracle_path.is_file():
        oracle_bytes, oracle_key = _read(oracle_path, "oracle_raw", dataset_dir)
    elif require_oracle:
        raise InputError(
            oracle_path, "oracle_raw", "file not found (this scenario replays recorded predictions)"
        )

    info = read_wav_info(audio_path, audio_bytes, speakers)
    words = parse_transcript(text_path, text_bytes, speakers, info.duration_s)
    oracle = parse_oracle_raw(oracle_path, oracle_bytes) if oracle_bytes is not None else ()
    return Conversation(
        id=conversation_id,
        source_dir=dataset_dir,
        audio=LazyAudio(audio_path, audio_bytes, info, sample_rate),  # type: ignore[arg-type]
        sample_rate=sample_rate,
        words=words,
        oracle_raw=oracle,
        content_hash=_memoised_hash((audio_key, text_key, oracle_key), audio_bytes, text_bytes, oracle_bytes),
        speakers=speakers,
    )


def content_hash(audio: bytes, transcript: bytes, oracle_raw: bytes | None) -> str:
    """sha256 over the three files' raw bytes, each framed by a label and its length.

    The framing keeps the hash unambiguous (bytes moved from one file to the next change it) and
    distinguishes a missing oracle_raw file from an empty one.
    """
    h = hashlib.sha256()
    for label, data in (("audio", audio), ("text", transcript), ("oracle_raw", oracle_raw)):
        size = "absent" if data is None else str(len(data))
        h.update(f"{label}\0{size}\0".encode())
        if data is not None:
            h.update(data)
    return h.hexdigest()


def _memoised_hash(
    keys: tuple[FileKey | None, ...], audio: bytes, transcript: bytes, oracle_raw: bytes | None
) -> str:
    """:func:`content_hash`, memoised per process while the files are unchanged (:mod:`.hash_memo`)."""
    digest = hash_memo.lookup(keys)
    if digest is None:
        digest = content_hash(audio, transcript, oracle_raw)
        hash_memo.remember(keys, digest)
    return digest


def _check_dataset_dir(dataset_dir: Path) -> Path:
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        what = "is not a directory" if dataset_dir.exists() else "no such directory"
        raise InputError(dataset_dir, "dataset_dir", f"{what} (expected audio/, text/, oracle_raw/)")
    return dataset_dir


def _check_speakers(speakers: tuple[str, str]) -> tuple[str, str]:
    speakers = tuple(speakers)
    if (
        len(speakers) != 2
        or not all(isinstance(s, str) and s for s in speakers)
        or speakers[0] == speakers[1]
    ):
        raise InputError(None, "speakers", f"expected two different speaker names, got {speakers!r}")
    return speakers  # type: ignore[return-value]


def _resolve_id(dataset_dir: Path, conversation_id: str | None) -> str:
    available = list_conversations(dataset_dir)
    listing = ", ".join(available) if available else "none (expected audio/<id>.wav and text/<id>.json)"
    if conversation_id is None:
        if len(available) == 1:
            return available[0]
        reason = "several conversations found" if available else "no conversation found"
        raise InputError(dataset_dir, "conversation_id", f"{reason}; pick one of: {listing}")
    if (
        not isinstance(conversation_id, str)
        or not conversation_id
        or Path(conversation_id).name != conversation_id
        or conversation_id in (".", "..")
    ):
        raise InputError(dataset_dir, "conversation_id", f"not a plain file stem: {conversation_id!r}")
    return conversation_id


def _read(path: Path, field: str, dataset_dir: Path) -> tuple[bytes, FileKey | None]:
    """The file's bytes and its :func:`~.hash_memo.file_key` (None: not to be trusted); a missing
    file names what is there, so a typo in the id is obvious."""
    try:
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            read_at = hash_memo.now_ns()
            data = f.read()
            return data, hash_memo.file_key(before, os.fstat(f.fileno()), read_at)
    except FileNotFoundError:
        available = ", ".join(list_conversations(dataset_dir)) or "none"
        raise InputError(path, field, f"file not found (available conversations: {available})") from None
    except IsADirectoryError:
        raise InputError(path, field, "is a directory, not a file") from None
    except OSError as e:
        raise InputError(path, field, f"cannot read: {e.strerror or e}") from None
