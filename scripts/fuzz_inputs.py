"""Fuzz the command line with broken inputs of every class and count how each one ends.

Every case is a broken input (wrong types, degenerate or absurd values, values that would never
finish, paths that escape or are files, hostile text, broken audio, oversized sweeps), built from
temporary copies of ``scenarios/demo.toml`` and its data (nothing is written into ``scenarios/``).
Each case runs the CLI (typer's CliRunner) in a forked child with a time and memory limit, and
ends as one of:

* ``clean``     exit 2 with one line ``error: ...`` and nothing written (what the house rules want)
* ``messy``     exit 2 but more than one line, or files were left behind
* ``traceback`` an exception escaped the CLI
* ``hang``      past the time limit, or out of memory
* ``accepted``  exit 0: the bad input was silently taken
* ``other``     any other exit code

    python scripts/fuzz_inputs.py            # summary table; exit 1 unless every case is clean
    python scripts/fuzz_inputs.py -v         # one line per case with its outcome
    python scripts/fuzz_inputs.py -k audio   # only cases whose class or label contains "audio"
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import struct
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from typer.testing import CliRunner  # noqa: E402

from kame_sim.cli import app  # noqa: E402

DEMO_TOML = REPO / "scenarios" / "demo.toml"
DEMO_DATA = REPO / "scenarios" / "data" / "demo"
OUTCOMES = ("clean", "messy", "traceback", "hang", "accepted", "other")
TIMEOUT_S = 30.0
MEMORY_LIMIT = 3 * 1024**3


@dataclass(frozen=True)
class Case:
    """One broken input: its class, a label, and how to build the CLI arguments in a fresh folder."""

    kind: str
    label: str
    build: Callable[[Path], list[str]]


# --------------------------------------------------------------------------- building inputs


def scenario_file(d: Path, data: Path = DEMO_DATA, extra: str = "", text: str | None = None) -> Path:
    """A copy of demo.toml pointing at ``data``, writing under ``d/a/b/traces``, plus ``extra`` TOML."""
    body = DEMO_TOML.read_text(encoding="utf-8") if text is None else text
    body = body.replace('path = "data/demo"', f"path = {json.dumps(str(data))}")
    body = body.replace("[run]\n", f"[run]\noutput_dir = {json.dumps(str(d / 'a' / 'b' / 'traces'))}\n", 1)
    path = d / "scenario.toml"
    path.write_text(body + extra, encoding="utf-8")
    return path


def run_args(d: Path, *extra: str, data: Path = DEMO_DATA, command: str = "run") -> list[str]:
    args = [command, str(scenario_file(d, data))]
    return [*args, "--quiet", *extra] if command == "run" else [*args, *extra]


def with_set(*assignments: str, command: str = "run") -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        sets = [x for a in assignments for x in ("--set", a)]
        return run_args(d, *sets, command=command)

    return build


def with_toml(extra: str) -> Callable[[Path], list[str]]:
    return lambda d: ["run", str(scenario_file(d, extra=extra)), "--quiet"]


def copy_data(d: Path) -> Path:
    target = d / "data"
    shutil.copytree(DEMO_DATA, target)
    return target


def with_data(edit: Callable[[Path], None], command: str = "run") -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        data = copy_data(d)
        edit(data)
        return run_args(d, data=data, command=command)

    return build


def edit_json(relative: str, change: Callable[[list], object]) -> Callable[[Path], None]:
    def edit(data: Path) -> None:
        path = data / relative
        entries = json.loads(path.read_text(encoding="utf-8"))
        result = change(entries)
        path.write_text(result if isinstance(result, str) else json.dumps(entries), encoding="utf-8")

    return edit


def raw_json(relative: str, text: str | bytes) -> Callable[[Path], None]:
    def edit(data: Path) -> None:
        path = data / relative
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)

    return edit


def set_entry(index: int, key: str, value: object) -> Callable[[list], object]:
    def change(entries: list) -> None:
        entries[index][key] = value

    return change


def surrogate_in(relative: str, index: int, key: str) -> Callable[[Path], None]:
    """JSON's \\ud800 escape decodes to a lone surrogate, which no UTF-8 writer can encode."""

    def edit(data: Path) -> None:
        path = data / relative
        entries = json.loads(path.read_text(encoding="utf-8"))
        entries[index][key] = "SURROGATE"
        path.write_text(json.dumps(entries).replace("SURROGATE", "x\\ud800y"), encoding="utf-8")

    return edit


def wav(samples: np.ndarray, rate: int, subtype: str = "FLOAT") -> Callable[[Path], None]:
    def edit(data: Path) -> None:
        sf.write(data / "audio" / "demo.wav", samples, rate, subtype=subtype, format="WAV")

    return edit


def demo_samples() -> tuple[np.ndarray, int]:
    samples, rate = sf.read(DEMO_DATA / "audio" / "demo.wav", dtype="float32", always_2d=True)
    return samples, rate


def poisoned(value: float) -> Callable[[Path], None]:
    samples, rate = demo_samples()
    samples = samples.copy()
    samples[1000:1010, 0] = value
    return wav(samples, rate)


def truncated_wav(keep: float) -> Callable[[Path], None]:
    def edit(data: Path) -> None:
        path = data / "audio" / "demo.wav"
        blob = path.read_bytes()
        path.write_bytes(blob[: int(len(blob) * keep)])

    return edit


def header_lies(factor: int) -> Callable[[Path], None]:
    """A RIFF header whose data chunk claims ``factor`` times the bytes that follow it."""

    def edit(data: Path) -> None:
        path = data / "audio" / "demo.wav"
        blob = bytearray(path.read_bytes())
        at = blob.find(b"data")
        size = struct.unpack_from("<I", blob, at + 4)[0]
        struct.pack_into("<I", blob, at + 4, min(size * factor, 2**32 - 1))
        path.write_bytes(bytes(blob))

    return edit


def long_utterance(n_words: int) -> Callable[[Path], None]:
    """``n_words`` user words without a pause (nested alignments make that legal in time)."""

    def change(entries: list) -> str:
        words = [
            {"speaker": "A", "word": f"w{i % 50}", "start": 1.0 + i * 1e-6, "end": 30.0}
            for i in range(n_words)
        ]
        return json.dumps(words + [e for e in entries if e["speaker"] == "B"])

    return edit_json("text/demo.json", change)


def only_speaker(speaker: str) -> Callable[[list], str]:
    return lambda entries: json.dumps([e for e in entries if e["speaker"] == speaker])


def sweep_case(body: str, *extra: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        scenario = scenario_file(d)
        spec = d / "sweep.toml"
        spec.write_text(f"base = {json.dumps(str(scenario))}\n{body}", encoding="utf-8")
        out = d / "sweeps" / "out"
        return ["sweep", str(spec), "--out", str(out), "--workers", "1", "--quiet", *extra]

    return build


def out_is_file(command: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        blocker = d / "blocker.txt"
        blocker.write_text("not kame-sim's\n", encoding="utf-8")
        if command == "run":
            return run_args(d, "--out", str(blocker))
        if command == "run-under":
            return run_args(d, "--out", str(blocker / "sub"))
        if command == "sweep":
            args = sweep_case("seeds = 1\n")(d)
            args[args.index("--out") + 1] = str(blocker)
            return args
        trace_dir = d / "trace"
        result = CliRunner().invoke(app, run_args(d, "--out", str(trace_dir)))
        assert result.exit_code == 0, result.output
        return ["report", str(trace_dir), "--out", str(blocker)]

    return build


def output_dir_is_file(d: Path) -> list[str]:
    blocker = d / "blocker.txt"
    blocker.write_text("x", encoding="utf-8")
    return run_args(d, "--set", f"run.output_dir={json.dumps(str(blocker))}")


def non_utf8_scenario(d: Path) -> list[str]:
    path = scenario_file(d, extra='[frontend]\nguess_text = "caf\xe9"\n')
    path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    return ["run", str(path), "--quiet"]


def deep_toml(d: Path) -> list[str]:
    return [
        "run",
        str(scenario_file(d, extra="[frontend]\nguess_text = " + "[" * 50000 + "]" * 50000 + "\n")),
    ]


def check_case(d: Path) -> list[str]:
    """A check whose --junit is an existing folder (used to fail only after all its runs)."""
    scenario = scenario_file(d)
    spec = d / "check.toml"
    spec.write_text(
        f"base = {json.dumps(str(scenario))}\nseeds = 1\n"
        "[[assert]]\nmetric = 'skipped_token_rate'\nop = '<='\nvalue = 1\n",
        encoding="utf-8",
    )
    (d / "junit").mkdir()
    return [
        "check",
        str(spec),
        "--out",
        str(d / "out"),
        "--workers",
        "1",
        "--junit",
        str(d / "junit"),
        "--quiet",
    ]


def tokenizer_dir(d: Path) -> list[str]:
    return run_args(d, "--set", f"oracle.tokenizer={json.dumps(str(d))}")


# --------------------------------------------------------------------------- the cases


def cases() -> list[Case]:
    out: list[Case] = []

    def add(kind: str, label: str, build: Callable[[Path], list[str]]) -> None:
        out.append(Case(kind, label, build))

    # wrong types (coerced or crashing)
    for assignment in (
        "run.seed=true",
        'run.seed="7"',
        "run.seed=7.0",
        "run.max_seconds=true",
        "run.name=5",
        "run.name=true",
        "run.time_coupling=1",
        "conversation.sample_rate=24000.0",
        "conversation.frame_samples=true",
        'conversation.frame_samples="1920"',
        "conversation.user_speaker=1",
        "conversation.id=5",
        "stt.emit_partials=1",
        'stt.emit_partials="yes"',
        'stt.utterance_gap="0.8"',
        "stt.utterance_gap=true",
        "stt.cpu_threads=2.0",
        "stt.compute_scale=true",
        "llm.words_per_chunk=1.0",
        "llm.words_per_chunk=true",
        "llm.max_reply_words=true",
        "llm.max_retries=true",
        "llm.model=5",
        'llm.request_timeout="30"',
        'llm.time_scale="1"',
        "policy.queue_size=true",
        "policy.queue_size=64.0",
        'policy.max_starts="5"',
        "policy.poll_interval=true",
        'policy.rate_window="2"',
        "policy.restart_word_delta=2.0",
        "oracle.padding_id=3.0",
        "oracle.padding_id=true",
        "frontend.tokens_per_second=true",
        'frontend.reaction_delay="0.1"',
        "frontend.guess_text=5",
        "frontend.turn_take_pause=false",
        'llm.ttft={kind="lognormal", median="0.5", sigma=0.3}',
        'llm.ttft={kind="uniform", low=true, high=1}',
        'llm.ttft={kind="constant", value="1"}',
        'stt.partial_delay={kind="gamma", shape=2, scale="0.1"}',
        'llm.inter_chunk={kind="lognormal", median=0.05, sigma=0.3, shift=true}',
        'llm.ttft={kind="mixture", components=[{weight=true, model=1}]}',
        'llm.ttft={kind="mixture", components=[{weight="1", model=1}]}',
        'llm.ttft={kind="empirical", samples=["0.1", 0.2]}',
        'llm.ttft={kind="ar1", median=0.5, sigma=0.3, rho=false}',
        'llm.ttft={kind="pareto", scale=0.1, alpha="1.5"}',
        'llm.ttft={kind="truncnormal", mean="0.5", std=0.1}',
        'llm.ttft={kind="truncnormal", mean=0.5, std=0.1, high="2"}',
        'stt.final_delay={kind="constant", value=1, shift="0.1"}',
    ):
        add("wrong type", f"--set {assignment}", with_set(assignment))
    add("wrong type", "[policy] queue_size = true in the file", with_toml("[policy]\nqueue_size = true\n"))
    add("wrong type", "[stt] emit_partials = 0 in the file", with_toml("[stt]\nemit_partials = 0\n"))

    # degenerate or absurd values
    for assignment in (
        "conversation.sample_rate=1",
        "conversation.sample_rate=100",
        "conversation.sample_rate=100000000",
        "conversation.frame_samples=1000000000",
        "conversation.frame_samples=100",
        "conversation.frame_samples=48000",
        "llm.ttft=1e308",
        "llm.ttft=1e10",
        "stt.final_delay=1e308",
        "stt.partial_delay=1e300",
        "llm.inter_chunk=1e308",
        'llm.ttft={kind="lognormal", median=1e300, sigma=0.3}',
        'llm.ttft={kind="lognormal", median=0.5, sigma=1e300}',
        'llm.ttft={kind="pareto", scale=0.1, alpha=1e-300}',
        'llm.ttft={kind="uniform", low=0, high=1e308}',
        'llm.ttft={kind="truncnormal", mean=1e300, std=1e300}',
        'llm.ttft={kind="gamma", shape=1e300, scale=1e300}',
        'llm.ttft={kind="constant", value=0.5, shift=1e308}',
        'llm.ttft={kind="mixture", components=[{weight=1e308, model=1}, {weight=1e308, model=2}]}',
        'llm.ttft={kind="empirical", samples=[1e308]}',
        'llm.ttft={kind="ar1", median=0.5, sigma=1e300, rho=0.5}',
        "oracle.padding_id=100000",
        "oracle.padding_id=1024",
        "oracle.padding_id=9223372036854775808",
        "oracle.padding_id=2147483648",
        "run.seed=18446744073709551616",
        "run.max_seconds=1e-9",
        "run.max_seconds=1e308",
        "stt.utterance_gap=1e308",
        "stt.utterance_gap=1e-300",
        "policy.rate_window=1e308",
        "policy.max_starts=1000000000000000000",
        "policy.queue_size=1000000000000000000",
        "policy.restart_word_delta=1000000000000000000",
        "llm.words_per_chunk=1000000000000000000",
        "llm.max_reply_words=1000000000000000000",
        "llm.request_timeout=1e308",
        "llm.time_scale=1e308",
        "llm.time_scale=1e-308",
        "frontend.tokens_per_second=1e-300",
        "frontend.turn_take_pause=1e308",
        "frontend.reaction_delay=1e308",
        "frontend.yield_after=1e308",
        "stt.chunk_seconds=1e-9",
        "stt.compute_scale=1e308",
        "stt.cpu_threads=1000000000",
        'llm.model=" "',
    ):
        add("degenerate", f"--set {assignment}", with_set(assignment))

    # values that never finish
    add("never finishes", "--set policy.poll_interval=1e-7", with_set("policy.poll_interval=1e-7"))
    add("never finishes", "--set policy.poll_interval=1e-300", with_set("policy.poll_interval=1e-300"))
    add("never finishes", "--set conversation.frame_samples=1", with_set("conversation.frame_samples=1"))
    add("never finishes", "sweep seeds = 10000000", sweep_case("seeds = 10000000\n"))
    add(
        "never finishes",
        "sweep grid of 10^9 points",
        sweep_case(
            "[parameters]\n"
            + "".join(
                f'"frontend.{k}" = {json.dumps([0.1 + i / 1000 for i in range(1000)])}\n'
                for k in ("turn_take_pause", "yield_after", "reaction_delay")
            )
        ),
    )
    add(
        "never finishes",
        "sweep random samples = 10^9",
        sweep_case(
            'design = "random"\nsamples = 1000000000\n[parameters]\n'
            '"frontend.turn_take_pause" = {low = 0.1, high = 1.0}\n'
        ),
    )
    add("never finishes", "one 200k-word utterance", with_data(long_utterance(200_000)))
    add("never finishes", "one 40k-word utterance", with_data(long_utterance(40_000)))

    # paths
    for assignment in (
        'run.name="../../x"',
        'run.name="a/b"',
        'run.name=".."',
        'run.name="."',
        'run.name=""',
        'run.name="a\\nb"',
        'run.name="a\\u0000b"',
        'run.name="a\\\\b"',
        'run.name="a\\u001bb"',
        'conversation.id="../demo"',
        'conversation.id="a/b"',
        'run.output_dir="a\\u0000b"',
        'oracle.tokenizer="a\\u0000b"',
        'conversation.path="a\\u0000b"',
    ):
        add("path", f"--set {assignment}", with_set(assignment))
    add("path", "run --out is a regular file", out_is_file("run"))
    add("path", "run --out is under a regular file", out_is_file("run-under"))
    add("path", "run.output_dir is a regular file", output_dir_is_file)
    add("path", "sweep --out is a regular file", out_is_file("sweep"))
    add("path", "report --out is a regular file", out_is_file("report"))
    add("path", "oracle.tokenizer is a directory", tokenizer_dir)
    add("path", "sweep name = '../../x'", sweep_case('name = "../../x"\nseeds = 1\n'))
    add("path", "check --junit is a folder", check_case)
    add(
        "path",
        "conversation.path = '~nobody/x' in the file",
        lambda d: ["run", str(scenario_file(d, data=Path("~kame_no_such_user/x"))), "--quiet"],
    )
    add(
        "path",
        "empirical trace = '~nobody/t'",
        with_set('llm.ttft={kind="empirical", trace="~kame_no_such_user/t", measure="ttft"}'),
    )

    # text
    add("text", "scenario file is not UTF-8", non_utf8_scenario)
    add("text", "scenario nested 50k deep", deep_toml)
    add("text", "--set value nested 50k deep", with_set("frontend.guess_text=" + "[" * 50000 + "]" * 50000))
    add("text", "--set run.name with a lone surrogate", with_set("run.name=x\udcffy"))
    add("text", "--set frontend.guess_text with a lone surrogate", with_set('frontend.guess_text="x\udcffy"'))
    add("text", "transcript word with a lone surrogate", with_data(surrogate_in("text/demo.json", 3, "word")))
    add(
        "text",
        "transcript speaker with a lone surrogate",
        with_data(surrogate_in("text/demo.json", 3, "speaker")),
    )
    for key in ("prediction", "hint", "conversation_context", "trigger_word", "recent_words"):
        add(
            "text",
            f"oracle_raw {key} with a lone surrogate",
            with_data(surrogate_in("oracle_raw/demo.json", 0, key)),
        )
    add(
        "text",
        "transcript nested 100k deep",
        with_data(raw_json("text/demo.json", "[" * 100000 + "]" * 100000)),
    )
    add(
        "text",
        "oracle_raw nested 100k deep",
        with_data(raw_json("oracle_raw/demo.json", "[" * 100000 + "]" * 100000)),
    )
    add("text", "transcript is not UTF-8", with_data(raw_json("text/demo.json", b'[{"word": "caf\xe9"}]')))
    add(
        "text",
        "transcript word with a NUL",
        with_data(edit_json("text/demo.json", set_entry(3, "word", "a\0b"))),
    )
    add(
        "text",
        "oracle_raw prediction with NUL and escapes",
        with_data(edit_json("oracle_raw/demo.json", set_entry(0, "prediction", "\0\x1b[31m\u202e"))),
    )
    add(
        "text",
        "transcript word 1 MB long",
        with_data(edit_json("text/demo.json", set_entry(3, "word", "x" * 1_000_000))),
    )
    add(
        "text",
        "validate: transcript word with a lone surrogate",
        with_data(surrogate_in("text/demo.json", 3, "word"), command="validate"),
    )
    add("text", "rich markup in a quoted value", with_set("llm.ttft=[/x]"))
    add("text", "newline in a quoted value", with_set('llm.ttft="a\\nb"'))
    add("text", "lone surrogate in a --set key", with_set("x\udcffy=1"))
    add("text", "empty --set key", with_set("=1"))
    add("text", "--set key '.'", with_set(".=1"))

    # audio
    samples, rate = demo_samples()
    add("audio", "NaN samples", with_data(poisoned(float("nan"))))
    add("audio", "inf samples", with_data(poisoned(float("inf"))))
    add("audio", "-inf samples (validate)", with_data(poisoned(float("-inf")), command="validate"))
    add("audio", "1 Hz sample rate", with_data(wav(samples[:40], 1)))
    add("audio", "100 Hz sample rate", with_data(wav(samples[:4000], 100)))
    add("audio", "10 MHz sample rate", with_data(wav(np.zeros((400_000, 2), np.float32), 10_000_000)))
    add("audio", "truncated wav (half the data)", with_data(truncated_wav(0.5)))
    add("audio", "data chunk claims 4x its bytes", with_data(header_lies(4)))
    add("audio", "wav shorter than one frame", with_data(wav(samples[:800], rate)))
    add("audio", "user with no words", with_data(edit_json("text/demo.json", only_speaker("B"))))
    add(
        "audio",
        "user with no words (validate)",
        with_data(edit_json("text/demo.json", only_speaker("B")), command="validate"),
    )
    add("audio", "three channels", with_data(wav(np.zeros((rate * 40, 3), np.float32), rate)))
    add("audio", "random bytes", with_data(raw_json("audio/demo.wav", os.urandom(5000))))
    add("audio", "empty file", with_data(raw_json("audio/demo.wav", b"")))
    add("audio", "header only", with_data(truncated_wav(0.0000011)))
    return out


# --------------------------------------------------------------------------- running them


def _files_under(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _child(case: Case, d: Path, conn) -> None:  # type: ignore[no-untyped-def]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    try:
        args = case.build(d)
        before = _files_under(d)
        result = CliRunner().invoke(app, args)
        left = sorted(_files_under(d) - before)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            exc = result.exception
            outcome = "hang" if isinstance(exc, MemoryError) else "traceback"
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-2:])
            conn.send((outcome, f"{type(exc).__name__}: {str(exc)[:200]} | {tb.strip()[:300]}"))
            return
        lines = [line for line in result.output.splitlines() if line.strip()]
        if result.exit_code == 2:
            clean = len(lines) == 1 and lines[0].startswith("error: ") and not left
            detail = lines[0] if len(lines) == 1 else " / ".join(lines[:3])
            conn.send(("clean" if clean else "messy", detail[:300] + (f" [left {left[:3]}]" if left else "")))
        elif result.exit_code == 0:
            conn.send(("accepted", lines[-1][:200] if lines else ""))
        else:
            conn.send(("other", f"exit {result.exit_code}: {' / '.join(lines[:3])[:300]}"))
    except MemoryError:
        conn.send(("hang", "out of memory"))
    except BaseException as exc:  # the fuzzer's own failure to build a case
        conn.send(("other", f"case build failed: {type(exc).__name__}: {exc}"))


def run_case(case: Case, root: Path, index: int) -> tuple[str, str]:
    d = root / f"case{index:03d}"
    d.mkdir()
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(case, d, child))
    proc.start()
    child.close()
    if parent.poll(TIMEOUT_S):
        try:
            outcome = parent.recv()
        except EOFError:
            outcome = ("hang", "child died (killed for memory?)")
        proc.join()
    else:
        proc.kill()
        proc.join()
        outcome = ("hang", f"no answer within {TIMEOUT_S:.0f} s")
    shutil.rmtree(d, ignore_errors=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    parser.add_argument("-k", "--keyword", default="", help="only cases whose class or label contains this")
    parser.add_argument("--json", type=Path, help="write every case's outcome here")
    args = parser.parse_args(argv)
    selected = [c for c in cases() if args.keyword in c.kind or args.keyword in c.label]
    results: list[dict[str, str]] = []
    counts: dict[str, Counter[str]] = {}
    with tempfile.TemporaryDirectory(prefix="kame-fuzz-") as tmp:
        for i, case in enumerate(selected):
            outcome, detail = run_case(case, Path(tmp), i)
            counts.setdefault(case.kind, Counter())[outcome] += 1
            results.append({"kind": case.kind, "label": case.label, "outcome": outcome, "detail": detail})
            if args.verbose or outcome != "clean":
                print(
                    f"{outcome:9} [{case.kind}] {ascii(case.label)[:90]}: {ascii(detail)[:240]}", flush=True
                )
    total: Counter[str] = Counter()
    print(f"\n{'class':16}" + "".join(f"{o:>10}" for o in OUTCOMES) + f"{'cases':>8}")
    for kind, counter in counts.items():
        total.update(counter)
        print(f"{kind:16}" + "".join(f"{counter[o]:>10}" for o in OUTCOMES) + f"{sum(counter.values()):>8}")
    print(f"{'total':16}" + "".join(f"{total[o]:>10}" for o in OUTCOMES) + f"{sum(total.values()):>8}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0 if total["clean"] == sum(total.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
