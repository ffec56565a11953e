"""Bad input of every class ends in one line naming the file and the field, exit 2, nothing written.

One test per class of problem the fuzzing campaign (scripts/fuzz_inputs.py) found, each with a few
members of the class: wrong types that used to be coerced, degenerate values that ran to an empty
"complete" trace, values that never finished, paths that escaped the output folder or were files,
hostile text and broken audio.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import invoke, one_line_error
from conftest import DEMO_SCENARIO, REPO

from kame_sim.config import MIN_POLL_INTERVAL_S, load_scenario
from kame_sim.conversation.audio import MIN_SAMPLE_RATE
from kame_sim.conversation.model import Word
from kame_sim.delays.samplers import ConstantSampler
from kame_sim.errors import InputError
from kame_sim.stt.simulated import MAX_UTTERANCE_WORDS, schedule_stt_events
from kame_sim.sweep.spec import MAX_PLANNED_RUNS, MAX_SEEDS

DEMO_DATA = REPO / "scenarios" / "data" / "demo"


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*"))


def scenario(tmp_path: Path, extra: str = "", data: Path = DEMO_DATA) -> Path:
    """demo.toml pointing at ``data``, writing under tmp_path/a/b/traces, plus ``extra`` TOML."""
    text = DEMO_SCENARIO.read_text(encoding="utf-8").replace(
        'path = "data/demo"', f"path = {json.dumps(str(data))}"
    )
    out = json.dumps(str(tmp_path / "a" / "b" / "traces"))
    text = text.replace("[run]\n", f"[run]\noutput_dir = {out}\n", 1)
    path = tmp_path / "scenario.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def run_rejected(tmp_path: Path, *args: object, names: tuple[str, ...] = (), data: Path = DEMO_DATA) -> str:
    """``kame-sim run`` must refuse and leave nothing behind in tmp_path."""
    path = scenario(tmp_path, data=data)
    before = files_under(tmp_path)
    line = one_line_error(invoke("run", path, "--quiet", *args), *names)
    assert files_under(tmp_path) == before, files_under(tmp_path) - before
    return line


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("assignment", "field"),
    [
        ("run.seed=true", "run.seed"),
        ('run.seed="7"', "run.seed"),
        ("run.seed=7.0", "run.seed"),
        ("policy.queue_size=true", "policy.queue_size"),
        ("conversation.frame_samples=1920.0", "conversation.frame_samples"),
        ("stt.emit_partials=1", "stt.emit_partials"),
        ('llm.request_timeout="30"', "llm.request_timeout"),
        ("run.name=5", "run.name"),
        ('llm.ttft={kind="lognormal", median="0.5", sigma=0.3}', "llm.ttft.median"),
        ('llm.ttft={kind="uniform", low=true, high=1}', "llm.ttft.low"),
        ('llm.ttft={kind="mixture", components=[{weight="1", model=1}]}', "llm.ttft.components[0].weight"),
    ],
)
def test_wrong_types_are_not_coerced(tmp_path: Path, assignment: str, field: str):
    line = run_rejected(tmp_path, "--set", assignment, names=("scenario.toml", f": {field}: "))
    assert "got" in line  # the value given is named: in strict mode that is the explanation


def test_a_float_setting_takes_an_int_and_a_path_takes_a_string(tmp_path: Path):
    sc = load_scenario(
        scenario(tmp_path), {"llm.request_timeout": 30, "llm.ttft": 2, "oracle.tokenizer": None}
    )
    assert sc.llm.request_timeout == 30.0 and isinstance(sc.llm.request_timeout, float)
    assert sc.llm.ttft.value == 2.0
    assert isinstance(sc.conversation.path, Path) and isinstance(sc.run.output_dir, Path)


def test_wrong_types_in_the_file_are_refused_too(tmp_path: Path):
    path = scenario(tmp_path, "[policy]\nqueue_size = true\n")
    one_line_error(invoke("validate", path), "scenario.toml", "policy.queue_size", "boolean")


# --------------------------------------------------------------------------- degenerate values


@pytest.mark.parametrize(
    ("assignment", "field"),
    [
        ("conversation.sample_rate=1", "conversation.sample_rate"),
        ("conversation.sample_rate=100000000", "conversation.sample_rate"),
        ("conversation.frame_samples=1000000000", "conversation.frame_samples"),
        ("conversation.frame_samples=100", "conversation.frame_samples"),  # 4 ms
        ("llm.ttft=1e308", "llm.ttft.value"),
        ("stt.final_delay=7200", "stt.final_delay.value"),
        ('llm.ttft={kind="pareto", scale=0.1, alpha=1e-300}', "llm.ttft"),
        ('llm.ttft={kind="lognormal", median=0.5, sigma=1e300}', "llm.ttft.sigma"),
        (
            'llm.ttft={kind="mixture", components=[{weight=1e308, model=1}, {weight=1e308, model=2}]}',
            "llm.ttft.components[0].weight",
        ),
        ("run.max_seconds=1e-9", "run.max_seconds"),
        ("run.max_seconds=1e308", "run.max_seconds"),
        ("run.seed=18446744073709551616", "run.seed"),
        ("policy.queue_size=1000000000000000000", "policy.queue_size"),
        ("llm.time_scale=1e308", "llm.time_scale"),
        ("frontend.tokens_per_second=1e-300", "frontend.tokens_per_second"),
        ("stt.utterance_gap=1e-300", "stt.utterance_gap"),
        ('llm.model=" "', "llm.model"),
    ],
)
def test_degenerate_values_are_refused(tmp_path: Path, assignment: str, field: str):
    run_rejected(tmp_path, "--set", assignment, names=("scenario.toml", f": {field}"))


@pytest.mark.parametrize("padding_id", [1024, 100000, 2**31, 2**63 - 1, 2**63])
def test_padding_id_must_be_inside_the_tokenizers_vocabulary(tmp_path: Path, padding_id: int):
    # 1024 is START for the bundled 1k tokenizer; 2**31 used to crash Arrow halfway through the run
    run_rejected(tmp_path, "--set", f"oracle.padding_id={padding_id}", names=("oracle.padding_id",))


def test_audio_shorter_than_one_frame_and_a_silent_user_are_refused(tmp_path: Path):
    data = copy_data(tmp_path / "short")
    samples, rate = sf.read(DEMO_DATA / "audio" / "demo.wav", always_2d=True)
    sf.write(data / "audio" / "demo.wav", samples[: rate // 20], rate)  # 50 ms
    keep_words_before(data, 0.05)
    one_line_error(invoke("validate", scenario(tmp_path, data=data)), "demo.wav", "samples", "one frame")

    data = copy_data(tmp_path / "silent")
    words = json.loads((data / "text" / "demo.json").read_text(encoding="utf-8"))
    (data / "text" / "demo.json").write_text(json.dumps([w for w in words if w["speaker"] == "B"]))
    run_rejected(tmp_path, names=("demo.json", "speaker", "no words"), data=data)


# --------------------------------------------------------------------------- values that never finish


@pytest.mark.parametrize("interval", ["1e-7", "1e-300", "0.0009"])
def test_poll_interval_has_a_floor(tmp_path: Path, interval: str):
    line = run_rejected(
        tmp_path, "--set", f"policy.poll_interval={interval}", names=("policy.poll_interval",)
    )
    assert f"{MIN_POLL_INTERVAL_S:g}" in line


def test_the_floor_itself_is_allowed(tmp_path: Path):
    assert load_scenario(scenario(tmp_path), {"policy.poll_interval": MIN_POLL_INTERVAL_S})


def sweep_file(tmp_path: Path, body: str) -> Path:
    spec = tmp_path / "sweep.toml"
    spec.write_text(f"base = {json.dumps(str(scenario(tmp_path)))}\n{body}", encoding="utf-8")
    return spec


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("seeds = 10000000\n", "seeds"),
        (f"seeds = {json.dumps(list(range(MAX_SEEDS + 1)))}\n", "seeds"),
        (
            "seeds = 100\n[parameters]\n"
            + "".join(
                f'"frontend.{k}" = {json.dumps([i / 100 for i in range(40)])}\n'
                for k in ("yield_after", "reaction_delay")
            ),
            "parameters",
        ),
        (
            'design = "random"\nsamples = 1000000000\n[parameters]\n"llm.ttft" = {low = 0.1, high = 1}\n',
            "samples",
        ),
    ],
)
def test_oversized_sweeps_fail_before_planning(tmp_path: Path, body: str, field: str):
    spec = sweep_file(tmp_path, body)
    out = tmp_path / "sweep-out"
    one_line_error(invoke("sweep", spec, "--out", out, "--workers", "1", "--quiet"), "sweep.toml", field)
    assert not out.exists()


def test_the_run_cap_counts_points_conversations_and_seeds(tmp_path: Path):
    seeds = MAX_PLANNED_RUNS // 40 + 1  # 40 points x seeds just over the cap, each count alone is small
    spec = sweep_file(
        tmp_path,
        f"seeds = {min(seeds, MAX_SEEDS)}\n[parameters]\n"
        f'"frontend.yield_after" = {json.dumps([i / 100 for i in range(40)])}\n',
    )
    line = one_line_error(invoke("sweep", spec, "--out", tmp_path / "o", "--quiet"), "sweep.toml")
    assert f"at most {MAX_PLANNED_RUNS}" in line


def test_an_endless_utterance_is_refused_at_the_bound_not_after_it():
    words = [Word("A", f"w{i}", 1.0 + i * 1e-6, 30.0) for i in range(MAX_UTTERANCE_WORDS + 1)]
    with pytest.raises(InputError, match=f"at most {MAX_UTTERANCE_WORDS}") as info:
        schedule_stt_events(words, 0.8, ConstantSampler(0.1), ConstantSampler(0.5), source="t.json")
    assert info.value.one_line().startswith("t.json: utterance 0: ")
    events = schedule_stt_events(words[:-1], 0.8, ConstantSampler(0.1), ConstantSampler(0.5))
    assert events[-1].kind == "final" and len(events[-1].text.split()) == MAX_UTTERANCE_WORDS


def test_a_50k_word_utterance_in_a_transcript_is_one_line(tmp_path: Path):
    data = copy_data(tmp_path / "data")
    words = [{"speaker": "A", "word": "so", "start": 1.0, "end": 30.0}] * 50_000
    words.append({"speaker": "B", "word": "ok", "start": 31.0, "end": 31.5})
    (data / "text" / "demo.json").write_text(json.dumps(words), encoding="utf-8")
    run_rejected(tmp_path, names=("demo.json", "utterance 0", "50000 words"), data=data)


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "", "a\\b", "a\nb", "a\u0000b", "a\u001bb"])
def test_run_names_must_be_plain(tmp_path: Path, name: str):
    line = run_rejected(tmp_path, "--set", f"run.name={json.dumps(name)}", names=("run.name",))
    assert "\n" not in line and "\x1b" not in line and "\x00" not in line


def test_run_out_that_is_a_file_is_one_line_and_the_file_is_kept(tmp_path: Path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not kame-sim's\n", encoding="utf-8")
    for out in (blocker, blocker / "sub"):
        one_line_error(invoke("run", scenario(tmp_path), "--out", out, "--quiet"), "notes.txt")
        assert blocker.read_text(encoding="utf-8") == "not kame-sim's\n"
    one_line_error(
        invoke("run", scenario(tmp_path), "--quiet", "--set", f"run.output_dir={json.dumps(str(blocker))}")
    )
    assert blocker.read_text(encoding="utf-8") == "not kame-sim's\n"


def test_sweep_and_report_out_that_is_a_file(tmp_path: Path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep", encoding="utf-8")
    spec = sweep_file(tmp_path, "seeds = 1\n")
    one_line_error(invoke("sweep", spec, "--out", blocker, "--workers", "1", "--quiet"), "notes.txt")
    run_dir = tmp_path / "run"
    assert invoke("run", scenario(tmp_path), "--out", run_dir, "--quiet").exit_code == 0
    one_line_error(invoke("report", run_dir, "--out", blocker), "notes.txt", "report directory")
    assert blocker.read_text(encoding="utf-8") == "keep"


def test_sweep_names_must_be_plain(tmp_path: Path):
    spec = sweep_file(tmp_path, 'name = "../../x"\nseeds = 1\n')
    one_line_error(invoke("sweep", spec, "--workers", "1", "--quiet"), "sweep.toml", "name")


# --------------------------------------------------------------------------- text


def copy_data(target: Path) -> Path:
    shutil.copytree(DEMO_DATA, target)
    return target


def keep_words_before(data: Path, seconds: float) -> None:
    path = data / "text" / "demo.json"
    words = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps([{**w, "start": 0.0, "end": seconds} for w in words[:2]]), encoding="utf-8")


def test_a_scenario_that_is_not_utf8_or_too_deep(tmp_path: Path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[frontend]\nguess_text = "caf\xe9"\n'.encode("latin-1"))
    one_line_error(invoke("validate", path), "latin1.toml", "UTF-8")
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 50000 + "]" * 50000 + "\n", encoding="utf-8")
    one_line_error(invoke("validate", path), "deep.toml", "nested too deeply")
    run_rejected(
        tmp_path, "--set", "frontend.guess_text=" + "[" * 50000 + "]" * 50000, names=("nested too deeply",)
    )


@pytest.mark.parametrize(
    ("relative", "index", "key"),
    [
        ("text/demo.json", 3, "word"),
        ("text/demo.json", 3, "speaker"),
        ("oracle_raw/demo.json", 0, "prediction"),
        ("oracle_raw/demo.json", 0, "hint"),
        ("oracle_raw/demo.json", 1, "recent_words"),
    ],
)
def test_lone_surrogates_are_refused_at_load(tmp_path: Path, relative: str, index: int, key: str):
    # used to crash the run halfway, leaving a half-written run directory
    data = copy_data(tmp_path / "data")
    path = data / relative
    entries = json.loads(path.read_text(encoding="utf-8"))
    entries[index][key] = "MARK"
    path.write_text(json.dumps(entries).replace("MARK", "x\\ud800y"), encoding="utf-8")
    line = run_rejected(tmp_path, names=(Path(relative).name, f"[{index}].{key}", "surrogate"), data=data)
    assert "U+D800" in line


@pytest.mark.parametrize(
    ("key", "value"), [("word", "a\u0000b"), ("word", "\u001b[31mred"), ("speaker", "A\n")]
)
def test_control_characters_in_transcripts_are_refused(tmp_path: Path, key: str, value: str):
    data = copy_data(tmp_path / "data")
    path = data / "text" / "demo.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    entries[2][key] = value
    path.write_text(json.dumps(entries), encoding="utf-8")
    one_line_error(
        invoke("validate", scenario(tmp_path, data=data)), "demo.json", f"[2].{key}", "control character"
    )


def test_predictions_may_hold_newlines(tmp_path: Path):
    data = copy_data(tmp_path / "data")
    path = data / "oracle_raw" / "demo.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    entries[0]["prediction"] = "Sure.\nLet me check.\tOne moment."
    path.write_text(json.dumps(entries), encoding="utf-8")
    assert invoke("validate", scenario(tmp_path, data=data)).exit_code == 0


@pytest.mark.parametrize(
    ("text", "shown"),
    [("[/x]", "'[/x]'"), ("a\nb", "a\\nb"), ("\u001b[2J", "\\x1b[2J"), ("[bold]loud", "'[bold]loud'")],
)
def test_error_lines_show_hostile_text_escaped(tmp_path: Path, text: str, shown: str):
    # the message quotes the value: rich markup, newlines and terminal escapes in it must neither
    # break the one line nor be interpreted while printing
    line = run_rejected(
        tmp_path, "--set", f"llm.ttft={text}", names=("llm.ttft", "unknown delay preset", shown)
    )
    assert "\n" not in line and "\x1b" not in line


@pytest.mark.parametrize("assignment", ["llm.ttft=x\udcffy", "x\udcffy=1", 'llm.ttft={kind="x\udcff"}'])
def test_undecodable_command_line_bytes_are_one_line(tmp_path: Path, assignment: str):
    # a non-UTF-8 byte in argv arrives as a lone surrogate, which pydantic cannot even report on
    line = run_rejected(tmp_path, "--set", assignment, names=("lone surrogate U+DCFF",))
    assert "\udcff" not in line


def test_json_nested_too_deeply(tmp_path: Path):
    data = copy_data(tmp_path / "data")
    (data / "oracle_raw" / "demo.json").write_text("[" * 100000 + "]" * 100000, encoding="utf-8")
    run_rejected(tmp_path, names=("demo.json", "json", "nested too deeply"), data=data)


# --------------------------------------------------------------------------- audio


def write_wav(data: Path, samples: np.ndarray, rate: int, subtype: str = "FLOAT") -> None:
    sf.write(data / "audio" / "demo.wav", samples, rate, subtype=subtype, format="WAV")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_where_the_audio_is_read(tmp_path: Path, value: float):
    # Samples are decoded only where they are read: by the real front-end, the whisper STT and
    # `validate`. Those refuse before anything is written (the kame run before it even looks for
    # its checkpoint); a behavioural run with simulated STT never reads a sample, so it runs.
    data = copy_data(tmp_path / "data")
    samples, rate = sf.read(DEMO_DATA / "audio" / "demo.wav", dtype="float32", always_2d=True)
    samples[rate * 3, 1] = value  # 3 s into the front-end's channel
    write_wav(data, samples, rate)
    names = ("demo.wav", "samples", "finite", "channel 1", "3.000 s")
    for reads_audio in (
        ["--set", 'frontend={kind="kame", checkpoint="no-such-checkpoint"}'],
        ["--set", 'stt.kind="whisper"'],
    ):
        run_rejected(tmp_path, *reads_audio, names=names, data=data)
    one_line_error(invoke("validate", scenario(tmp_path, data=data)), *names)
    assert invoke("run", scenario(tmp_path, data=data), "--quiet").exit_code == 0


@pytest.mark.parametrize("rate", [1, 100, MIN_SAMPLE_RATE - 1, 1_000_000])
def test_unreal_sample_rates_are_refused(tmp_path: Path, rate: int):
    data = copy_data(tmp_path / "data")
    write_wav(data, np.zeros((max(rate, 2) * 2, 2), np.float32), rate)
    keep_words_before(data, 1.0)
    run_rejected(tmp_path, names=("demo.wav", "samplerate", f"{rate} Hz"), data=data)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_wavs_are_refused(tmp_path: Path, keep: float):
    data = copy_data(tmp_path / "data")
    path = data / "audio" / "demo.wav"
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])
    keep_words_before(data, 1.0)  # the words alone would not give it away
    run_rejected(tmp_path, names=("demo.wav", "truncated"), data=data)


def test_a_header_that_claims_more_data_than_there_is(tmp_path: Path):
    data = copy_data(tmp_path / "data")
    path = data / "audio" / "demo.wav"
    blob = bytearray(path.read_bytes())
    at = blob.find(b"data")
    struct.pack_into("<I", blob, at + 4, struct.unpack_from("<I", blob, at + 4)[0] * 2)
    path.write_bytes(bytes(blob))
    run_rejected(tmp_path, names=("demo.wav", "truncated"), data=data)


def test_a_streamed_wav_with_unknown_data_size_is_read(tmp_path: Path):
    # writers that cannot seek back leave the data size 0xFFFFFFFF: not a truncation
    data = copy_data(tmp_path / "data")
    path = data / "audio" / "demo.wav"
    blob = bytearray(path.read_bytes())
    struct.pack_into("<I", blob, blob.find(b"data") + 4, 0xFFFFFFFF)
    path.write_bytes(bytes(blob))
    assert invoke("validate", scenario(tmp_path, data=data)).exit_code == 0
