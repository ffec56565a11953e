"""Sweep specs: a base scenario, the values to vary, the seeds and conversations to repeat them on.

A sweep file is TOML, validated with pydantic (unknown keys are errors). Every design point is
turned into a full scenario and validated **before anything runs**, so a typo in a parameter key
or a value out of range fails in a second instead of after an hour of runs; every such error is
one :class:`InputError` line naming the sweep file and the key (``parameters.llm.ttft.median``).

Parameters and ``[set]`` keys are the scenario's dotted keys, exactly as ``kame-sim run --set``
takes them, applied to the base scenario's TOML (so a preset string such as
``ttft = "gpt-4.1-ttft"`` has no ``median`` to vary: give the key a table in ``[set]`` first).

The size of a sweep is computed before it is expanded: more than :data:`MAX_PLANNED_RUNS` runs (or
:data:`MAX_SEEDS` seeds) is an error, so ``seeds = 10000000`` fails at once instead of planning
for hours.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, fields
from dataclasses import field as _field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from kame_sim import __version__
from kame_sim.config import MAX_SEED, Scenario, load_scenario, read_toml, validation_to_input_error
from kame_sim.conversation.loader import AUDIO_DIR, ORACLE_DIR, TEXT_DIR, content_hash, list_conversations
from kame_sim.errors import InputError
from kame_sim.metrics.run_metrics import RunMetrics
from kame_sim.paths import plain_name_problem

#: Most runs one sweep may plan (design points x conversations x seeds).
MAX_PLANNED_RUNS = 100_000
#: Most seeds one sweep may repeat each point with.
MAX_SEEDS = 10_000
#: Largest lockstep batch a sweep may ask for (``batch_size`` / ``--batch``).
MAX_BATCH_SIZE = 256

#: Keys a sweep owns itself: varying them as parameters would fight the sweep's own bookkeeping.
RESERVED_KEYS = ("run.seed", "run.output_dir", "run.name")
CONVERSATION_KEYS = ("conversation.path", "conversation.id")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ConversationRef(_Strict):
    """One conversation to replay: a dataset directory (relative to the sweep file) and an id."""

    path: str
    id: str | None = None


class Range(_Strict):
    """A continuous (or integer) interval for random designs; ``log`` samples log-uniformly."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log = true needs low > 0")
        if self.integer and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("integer = true needs whole-number low and high")
        return self

    def draw(self, rng: np.random.Generator) -> float | int:
        """One value; integer ranges include both ends."""
        if self.integer:
            if self.log:
                return round(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
            return int(rng.integers(int(self.low), int(self.high) + 1))
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))


ParameterValues = list[Any] | Range


def metric_names() -> list[str]:
    """The metric columns every run gets in ``results.parquet`` (``RunMetrics.as_row()`` keys)."""
    return [f.name for f in fields(RunMetrics) if f.name not in ("conversation_id", "seed", "chunk_lags")]


class ReportSpec(_Strict):
    """What ``kame-sim report`` leads with for this sweep; it changes no run (run ids ignore it).

    ``metrics``: the panels, in order (default: the report's key metrics). ``x``: the parameter on
    the x axis; ``series``: the parameter drawn as one colour per value in every panel (defaults:
    see docs/reports.md). ``labels``: parameter -> one short label per value of its list, in order
    (default: the value itself; a delay table as its model, ``LogN(2 s, σ=0.3)``).
    """

    metrics: list[str] | None = Field(None, min_length=1)
    x: str | None = None
    series: str | None = None
    labels: dict[str, list[str]] = Field(default_factory=dict)


def check_plain_name(value: str | None) -> str | None:
    """A sweep's, check's or search's ``name`` (it names a folder): a plain name, or unset."""
    problem = None if value is None else plain_name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def check_seeds(value: int | list[int]) -> int | list[int]:
    """``seeds``: a count n (meaning 0..n-1) or a list of distinct seeds, at most MAX_SEEDS."""
    if isinstance(value, bool):
        raise ValueError("must be an integer or a list of integers")
    if isinstance(value, int):
        if not 1 <= value <= MAX_SEEDS:
            raise ValueError(f"a count of seeds must be at least 1 (1..{MAX_SEEDS}), got {value}")
        return value
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS} seeds, got {len(value)}")
    if any(s < 0 or s > MAX_SEED for s in value):
        raise ValueError(f"seeds must be in 0..{MAX_SEED}")
    if len(set(value)) != len(value):
        raise ValueError("seeds must be distinct")
    return value


#: Field types that carry those checks (sweep, check and search files share them).
PlainName = Annotated[str | None, AfterValidator(check_plain_name)]
Seeds = Annotated[int | list[int], AfterValidator(check_seeds)]


class SweepSpec(_Strict):
    """A whole sweep file (the TOML keys, validated)."""

    name: PlainName = Field(None, description="sweep name (default: the file's stem)")
    base: str = Field(..., description="base scenario TOML, relative to the sweep file")
    seeds: Seeds = Field(1, description="a list of seeds, or n meaning 0..n-1")
    conversations: list[ConversationRef] | None = None
    design: Literal["grid", "random"] = "grid"
    samples: int | None = Field(
        None, ge=1, le=MAX_PLANNED_RUNS, description="random design: number of points"
    )
    sample_seed: int = Field(0, ge=0, le=MAX_SEED, description="random design: seed of the point generator")
    set: dict[str, Any] = Field(default_factory=dict, description="fixed dotted-key overrides")
    parameters: dict[str, ParameterValues] = Field(default_factory=dict)
    report: ReportSpec | None = Field(None, description="what the sweep report shows first")
    batch_size: int = Field(
        1,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="most runs stepped as one lockstep batch (docs/sweeps.md, 'Lockstep batches')",
    )


    @property
    def seed_list(self) -> list[int]:
        """The seeds every design point is run with."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def _is_leaf(value: Any, stop_keys: frozenset[str]) -> bool:
    return not isinstance(value, dict) or bool(stop_keys & value.keys())


def flatten_dotted(
    table: dict[str, Any], stop_keys: frozenset[str], prefix: str = ""
) -> list[tuple[str, Any]]:
    """Flatten TOML tables into dotted keys, in file order.

    Lets users write ``llm.ttft.median = [..]`` unquoted (TOML makes that nested tables) as well
    as ``"llm.ttft.median" = [..]``. A table holding one of ``stop_keys`` is a value, not a
    level: ``{kind = ...}`` is a delay model or front-end to set whole, ``{low, high}`` a range.
    """
    out: list[tuple[str, Any]] = []
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if _is_leaf(value, stop_keys):
            out.append((dotted, value))
        else:
            out.extend(flatten_dotted(value, stop_keys, dotted + "."))
    return out


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: a design point, a seed and a conversation, with a stable id."""

    run_id: str
    point_index: int
    parameters: dict[str, Any]
    seed: int
    conversation_id: str
    scenario: dict[str, Any]  # the resolved scenario (JSON form), seed included

    @property
    def folder(self) -> str:
        """The run's folder under ``runs/``: its parameters, then its id (:func:`run_folder_name`)."""
        return run_folder_name(self.parameters, self.conversation_id, self.seed, self.run_id)


#: Longest run folder name: well under every file system's 255 bytes, short enough to read.
MAX_FOLDER_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]+")


def value_text(value: Any) -> str:
    """A parameter value as a short text: numbers as %g, tables as kind+key=value+..."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}"
    if isinstance(value, dict):
        items = [str(value["kind"])] if "kind" in value else []
        items += [f"{k}={value_text(v)}" for k, v in value.items() if k != "kind"]
        return "+".join(items)
    if isinstance(value, list):
        return "+".join(value_text(v) for v in value)
    return str(value)


def run_folder_name(parameters: dict[str, Any], conversation_id: str, seed: int, run_id: str) -> str:
    """``llm.ttft.median=0.5,policy.kind=multiplexer-SNG0072-seed3-<run_id>``: what a person reads
    first, then the id that makes it unique.

    Only letters, digits and ``. _ = + , -`` are kept (anything else, ``/`` and control
    characters included, becomes ``_``); the parameters are cut (the conversation and the seed are
    kept whole while they fit) so that the whole name is at most :data:`MAX_FOLDER_NAME`
    characters. The run id (16 hex digits) always ends the name, so a folder is found by id
    whatever the parameters look like.
    """
    params = _UNSAFE.sub("_", ",".join(f"{k}={value_text(v)}" for k, v in parameters.items()))
    conversation = "" if conversation_id == "?" else conversation_id  # "?": not found when planned
    tail = _UNSAFE.sub("_", "-".join(p for p in (conversation, f"seed{seed}") if p))
    room = MAX_FOLDER_NAME - len(run_id) - 1
    params = params[: max(0, room - len(tail) - 1)].strip("._-,+=")
    readable = "-".join(p for p in (params, tail) if p)[:room].strip("._-,+=")
    return f"{readable}-{run_id}" if readable else run_id


def run_id_of_folder(name: str) -> str | None:
    """The run id a run folder name ends with (``<id>`` alone: the layout before readable names)."""
    tail = name.rsplit("-", 1)[-1]
    return tail if re.fullmatch(r"[0-9a-f]{16}", tail) else None


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: where it came from, its design points and every run to do."""

    spec_path: Path
    spec: SweepSpec
    name: str
    base_path: Path
    parameter_keys: list[str]
    points: list[dict[str, Any]]
    runs: list[PlannedRun]
    cli_set: dict[str, Any] = _field(default_factory=dict)  # --set on the command line

    def resolved(self) -> dict[str, Any]:
        """What ``sweep.resolved.json`` records: enough to see exactly what was (to be) run."""
        return {
            "kame_sim_version": __version__,
            "name": self.name,
            "spec_path": str(self.spec_path),
            "base": str(self.base_path),
            "spec": self.spec.model_dump(mode="json"),
            "cli_set": self.cli_set,
            "parameters": self.parameter_keys,
            "points": self.points,
            "runs": [
                {
                    "run_id": r.run_id,
                    "folder": r.folder,
                    "point_index": r.point_index,
                    "parameters": r.parameters,
                    "seed": r.seed,
                    "conversation_id": r.conversation_id,
                }
                for r in self.runs
            ],
        }


def parse_spec(data: dict[str, Any], source: Path) -> SweepSpec:
    """Validate the sweep keys of a parsed TOML dict (dotted keys flattened first)."""
    data = dict(data)
    if isinstance(data.get("parameters"), dict):
        data["parameters"] = dict(flatten_dotted(data["parameters"], frozenset({"low", "high"})))
    if isinstance(data.get("set"), dict):
        data["set"] = dict(flatten_dotted(data["set"], frozenset({"kind"})))
    report = data.get("report")
    if isinstance(report, dict) and isinstance(report.get("labels"), dict):
        data["report"] = {**report, "labels": dict(flatten_dotted(report["labels"], frozenset()))}
    for key, values in (data.get("parameters") or {}).items():
        # checked one by one so the error speaks of the form given, not of both union branches
        if isinstance(values, dict):
            try:
                Range.model_validate(values)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                msg = msg.removeprefix("Value error, ")
                raise InputError(source, f"parameters.{key}", f"{where}: {msg}" if where else msg) from None
        elif not isinstance(values, list):
            raise InputError(source, f"parameters.{key}", "expected a list of values or a {low, high} table")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        # pydantic's union tags ("list[any]", "Range") are not keys a user writes
        parts = [p for p in loc if not (isinstance(p, str) and ("[" in p or p == "Range"))]
        if parts[:1] in (["parameters"], ["set"]) and len(parts) >= 2:
            field = ".".join(str(p) for p in parts)
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            if first["type"] in ("list_type", "model_type") and parts[0] == "parameters":
                msg = "expected a list of values or a {low, high} table"
            raise InputError(source, field, msg.removeprefix("Value error, ")) from None
        error = validation_to_input_error(exc, source)
        raise InputError(source, error.field, error.message.removeprefix("Value error, ")) from None
    _check_design(spec, source)
    return spec


def _check_design(spec: SweepSpec, source: Path) -> None:
    """Rules across keys, each reported at the key a user has to change."""
    if spec.design == "random" and spec.samples is None:
        raise InputError(source, "samples", "design = 'random' needs samples = N")
    if spec.design == "grid" and spec.samples is not None:
        raise InputError(source, "samples", "only for design = 'random'")
    for key, values in spec.parameters.items():
        if isinstance(values, list) and not values:
            raise InputError(source, f"parameters.{key}", "needs at least one value")
        if spec.design == "grid" and isinstance(values, Range):
            raise InputError(
                source,
                f"parameters.{key}",
                "a grid needs a list of values ({low, high} is for design = 'random')",
            )
    if spec.report is not None:
        known = metric_names()
        for metric in spec.report.metrics or []:
            if metric not in known:
                message = f"{metric!r} is not a metric (one of: {', '.join(known)})"
                raise InputError(source, "report.metrics", message)
        for field in ("x", "series"):
            value = getattr(spec.report, field)
            if value is not None and value not in spec.parameters:
                shown = ", ".join(spec.parameters) or "none"
                message = f"{value!r} is not a parameter of this sweep ({shown})"
                raise InputError(source, f"report.{field}", message)
        if spec.report.x is not None and spec.report.x == spec.report.series:
            raise InputError(source, "report.series", "must differ from report.x")
        for key, labels in spec.report.labels.items():
            values = spec.parameters.get(key)
            if not isinstance(values, list):
                why = "a range has no fixed values" if isinstance(values, Range) else "not a parameter"
                raise InputError(source, f"report.labels.{key}", why)
            if len(labels) != len(values):
                message = f"{len(labels)} label(s) for {len(values)} value(s); give one per value, in order"
                raise InputError(source, f"report.labels.{key}", message)
    if spec.design == "grid":
        points = math.prod(len(v) for v in spec.parameters.values() if isinstance(v, list))
    else:
        points = spec.samples or 0
    conversations = len(spec.conversations) if spec.conversations else 1
    planned = points * conversations * len(spec.seed_list)
    if planned > MAX_PLANNED_RUNS:
        field = "parameters" if spec.design == "grid" and points > 1 else "seeds"
        raise InputError(
            source,
            "samples" if spec.design == "random" else field,
            f"{points} design point(s) x {conversations} conversation(s) x {len(spec.seed_list)} seed(s) "
            f"= {planned} runs; at most {MAX_PLANNED_RUNS} per sweep",
        )


def load_sweep(path: Path, cli_set: dict[str, Any] | None = None) -> SweepPlan:
    """Read a sweep file and plan (and validate) every run; ``cli_set``: see :func:`plan_sweep`."""
    path = Path(path)
    return plan_sweep(parse_spec(read_toml(path, "sweep"), path), path, cli_set)


def _check_cli_set(spec: SweepSpec, cli_set: dict[str, Any]) -> None:
    """``--set`` may change any scenario key the sweep does not own or vary."""
    for key in cli_set:
        flag = f"--set {key}"
        if key in RESERVED_KEYS:
            hint = "give the sweep seeds = ..." if key == "run.seed" else "the sweep sets it per run"
            raise InputError("<cli>", flag, f"cannot be set for a sweep ({hint})")
        if spec.conversations is not None and key in CONVERSATION_KEYS:
            raise InputError("<cli>", flag, "conflicts with the sweep's [[conversations]]")
        for param in spec.parameters:
            if key == param or key.startswith(param + "."):
                raise InputError(
                    "<cli>", flag, f"the sweep varies {param} (parameters.{param}): change the sweep file"
                )


def _check_keys(spec: SweepSpec, source: Path) -> None:
    keys = [*spec.set, *spec.parameters]
    for section, table in (("set", spec.set), ("parameters", spec.parameters)):
        for key in table:
            if key in RESERVED_KEYS:
                hint = "use seeds = ..." if key == "run.seed" else "the sweep sets it per run"
                raise InputError(source, f"{section}.{key}", f"cannot be swept or set ({hint})")
            if spec.conversations is not None and key in CONVERSATION_KEYS:
                raise InputError(source, f"{section}.{key}", "conflicts with [[conversations]]")
            if not key or any(not part for part in key.split(".")):
                raise InputError(source, f"{section}.{key}", "not a dotted scenario key")
    for key in spec.parameters:
        if key in spec.set:
            raise InputError(source, f"parameters.{key}", "also given in [set]; drop one")
    # [set] is applied first, then the parameters, each in file order: a key nested inside one
    # applied *later* would be silently overwritten by it.
    for i, a in enumerate(keys):
        for j, b in enumerate(keys):
            if i < j and a.startswith(b + "."):
                section = "set" if a in spec.set else "parameters"
                raise InputError(source, f"{section}.{a}", f"would be overwritten by {b}, applied after it")


def design_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The parameter values of every design point, in a deterministic order.

    Grid: the cartesian product, the first parameter varying slowest. Random: ``samples`` draws,
    each parameter drawn in file order from one ``numpy`` generator seeded with ``sample_seed``,
    so the same file always gives the same points (on every machine); a draw that repeats an
    earlier point (likely when every parameter is a list) is dropped, so there may be fewer.
    """
    keys = list(spec.parameters)
    if spec.design == "grid":
        lists = [spec.parameters[k] for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*lists)]  # type: ignore[arg-type]
    rng = np.random.default_rng(spec.sample_seed)
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(spec.samples or 0):
        point: dict[str, Any] = {}
        for key in keys:
            values = spec.parameters[key]
            if isinstance(values, Range):
                point[key] = values.draw(rng)
            else:
                point[key] = copy.deepcopy(values[int(rng.integers(len(values)))])
        fingerprint = json.dumps(point, sort_keys=True)
        if fingerprint not in seen:  # choosing from lists repeats points; a run is run once
            seen.add(fingerprint)
            points.append(point)
    return points


def _resolve_relative(value: Any, base_dir: Path) -> Any:
    if isinstance(value, str) and value:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base_dir / p).resolve())
    return value


@dataclass(frozen=True)
class _Fingerprint:
    conversation_id: str
    content_hash: str | None


def conversation_fingerprint(path: str | None, conversation_id: str | None) -> _Fingerprint:
    """The conversation's id and content hash, read without decoding the audio.

    Part of the run id, so a finished run is reused only for the very same data. A conversation
    that cannot be found here is not an error yet: the run will fail and be recorded as failed.
    """
    if path is None:
        return _Fingerprint(conversation_id or "?", None)
    root = Path(path)
    try:
        cid = conversation_id
        if cid is None:
            available = list_conversations(root)
            if len(available) != 1:
                return _Fingerprint("?", None)
            cid = available[0]
        audio = (root / AUDIO_DIR / f"{cid}.wav").read_bytes()
        text = (root / TEXT_DIR / f"{cid}.json").read_bytes()
        oracle_path = root / ORACLE_DIR / f"{cid}.json"
        oracle = oracle_path.read_bytes() if oracle_path.is_file() else None
    except (OSError, InputError):
        return _Fingerprint(conversation_id or "?", None)
    return _Fingerprint(cid, content_hash(audio, text, oracle))


def run_id_for(scenario: Scenario, fingerprint: _Fingerprint) -> str:
    """A stable id: sha256 of the resolved scenario (minus where it is written) and the data.

    The conversation's directory is replaced by its content hash when known, and a delay
    schedule's path by the hash of its bytes, so moving the checkout does not invalidate finished
    runs, while changed data does: a schedule edited in place (by hand, or between shrink steps)
    must not let a resumed sweep reuse runs of the old one.
    """
    resolved = json.loads(scenario.resolved_json())
    resolved["run"].pop("output_dir", None)
    resolved["run"].pop("name", None)
    if fingerprint.content_hash is not None:
        resolved["conversation"]["path"] = None
    schedule = scenario.delays.schedule
    if schedule is not None:
        # unreadable: the path stays (the run reports the file at its key)
        with contextlib.suppress(OSError):
            digest = hashlib.sha256(Path(schedule).read_bytes()).hexdigest()
            resolved["delays"]["schedule"] = f"sha256:{digest}"
    blob = json.dumps(
        {"scenario": resolved, "conversation": [fingerprint.conversation_id, fingerprint.content_hash]},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _rewrap(exc: InputError, overrides: dict[str, Any], fields: dict[str, str], source: Path) -> InputError:
    """Name the sweep key behind a scenario error (the base scenario's own errors pass through)."""
    if exc.source == "<cli>" and exc.field in overrides:  # set_dotted: a parent is not a table
        culprit: str | None = exc.field
    else:
        # the most specific key wins: "llm.ttft.median" over the "llm.ttft" table it sits in
        # the most specific key wins: "llm.ttft.median" over the "llm.ttft" table it sits in; an
        # override under an unknown section ("nope.key" -> error at "nope") is the culprit too
        field = exc.field or ""
        matches = [k for k in overrides if field and (field + ".").startswith(k + ".")]
        under = [k for k in overrides if field and k.startswith(field + ".")]
        culprit = max(matches, key=len) if matches else (under[0] if under else None)
    if culprit is None:
        return exc
    detail = "not a scenario key" if exc.message == "unknown key" else exc.message
    if exc.field and exc.field != culprit:
        detail = f"{exc.field}: {detail}"
    if exc.source == "<cli>":
        detail += " in the base scenario (give it a table in [set] first)"
    shown = json.dumps(overrides[culprit]) if not isinstance(overrides[culprit], str) else overrides[culprit]
    where = "<cli>" if fields[culprit].startswith("--set ") else source
    return InputError(where, fields[culprit], f"value {shown}: {detail}")


def plan_sweep(spec: SweepSpec, spec_path: Path, cli_set: dict[str, Any] | None = None) -> SweepPlan:
    """Expand the design and validate every (point, conversation) as a full scenario.

    ``cli_set`` (``kame-sim sweep/check --set KEY=VALUE``) changes every run's scenario: applied
    over the base scenario and the sweep's ``[set]`` (the command line wins), under the swept
    parameters (a key the sweep varies is refused). It is part of every run's scenario, hence of
    its id: a resume with another ``--set`` redoes the runs it changes. ``conversation.path`` is
    relative to the working directory there.
    """
    spec_path = Path(spec_path)
    here = spec_path.resolve().parent
    _check_keys(spec, spec_path)
    cli_set = dict(cli_set or {})
    _check_cli_set(spec, cli_set)
    base_path = (here / spec.base).resolve()
    if not base_path.is_file():
        raise InputError(spec_path, "base", f"base scenario not found: {base_path}")
    name = spec.name or spec_path.stem

    conversations: list[tuple[dict[str, Any], dict[str, str]]] = [({}, {})]
    if spec.conversations is not None:
        if not spec.conversations:
            raise InputError(spec_path, "conversations", "must not be empty (leave it out for the base's)")
        conversations = []
        for i, ref in enumerate(spec.conversations):
            directory = Path(_resolve_relative(ref.path, here))
            if not directory.is_dir():
                raise InputError(spec_path, f"conversations[{i}].path", f"no such directory: {directory}")
            values: dict[str, Any] = {"conversation.path": str(directory), "conversation.id": ref.id}
            fields = {k: f"conversations[{i}].{k.split('.')[1]}" for k in values}
            conversations.append((values, fields))

    fixed = {
        k: _resolve_relative(v, here) if k == "conversation.path" else v
        for k, v in spec.set.items()
        if k not in cli_set
    }
    fixed_fields = {k: f"set.{k}" for k in fixed}
    for key, value in cli_set.items():
        fixed[key] = _resolve_relative(value, Path.cwd()) if key == "conversation.path" else value
        fixed_fields[key] = f"--set {key}"
    points = design_points(spec)
    param_fields = {k: f"parameters.{k}" for k in spec.parameters}
    fingerprints: dict[tuple[str | None, str | None], _Fingerprint] = {}
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for index, point in enumerate(points):
        point_values = {
            k: _resolve_relative(v, here) if k == "conversation.path" else v for k, v in point.items()
        }
        for conv_values, conv_fields in conversations:
            overrides = {**fixed, **conv_values, **point_values}
            fields = {**fixed_fields, **conv_fields, **param_fields}
            try:
                scenario = load_scenario(base_path, copy.deepcopy(overrides))
            except InputError as exc:
                raise _rewrap(exc, overrides, fields, spec_path) from None
            cs = scenario.conversation
            key = (str(cs.path), cs.id)
            if key not in fingerprints:
                fingerprints[key] = conversation_fingerprint(str(cs.path), cs.id)
            fingerprint = fingerprints[key]
            for seed in spec.seed_list:
                seeded = scenario.model_copy(update={"run": scenario.run.model_copy(update={"seed": seed})})
                run_id = run_id_for(seeded, fingerprint)
                if run_id in seen:
                    raise InputError(
                        spec_path,
                        "parameters",
                        f"design point {index} repeats an earlier run exactly ({point}); drop the duplicate",
                    )
                seen.add(run_id)
                runs.append(
                    PlannedRun(
                        run_id=run_id,
                        point_index=index,
                        parameters=point,
                        seed=seed,
                        conversation_id=fingerprint.conversation_id,
                        scenario=json.loads(seeded.resolved_json()),
                    )
                )
    return SweepPlan(spec_path, spec, name, base_path, list(spec.parameters), points, runs, cli_set)
