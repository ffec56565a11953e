"""The command line as a user meets it: exit codes, one-line errors naming file and field, and
nothing half-written when the input is bad."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cli_helpers import invoke, one_line_error
from conftest import DEMO_SCENARIO, REPO

from kame_sim.cli import app

DEMO_DATA = REPO / "scenarios" / "data" / "demo"


def test_run_writes_a_trace_and_prints_a_summary(tmp_path: Path):
    result = invoke("run", DEMO_SCENARIO, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    assert "LLM streams started" in result.output and "response onset" in result.output
    assert (tmp_path / "run" / "trace.arrows").exists()
    shown = invoke("trace", "show", tmp_path / "run")
    assert shown.exit_code == 0 and "complete" in shown.output


def test_existing_trace_is_refused_unless_overwrite(tmp_path: Path):
    out = tmp_path / "run"
    assert invoke("run", DEMO_SCENARIO, "--out", out, "--quiet").exit_code == 0
    before = (out / "trace.arrows").read_bytes()
    line = one_line_error(invoke("run", DEMO_SCENARIO, "--out", out, "--quiet"))
    assert "already holds a trace" in line and "--overwrite" in line
    assert (out / "trace.arrows").read_bytes() == before
    assert invoke("run", DEMO_SCENARIO, "--out", out, "--quiet", "--overwrite").exit_code == 0


def write_scenario(tmp_path: Path, body: str, data: Path = DEMO_DATA) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(f'[conversation]\npath = "{data}"\n{body}', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("[run]\nnmae = 'x'\n", "run.nmae", "unknown key"),
        ("[llm]\nttft = { kind = 'lognormal', median = 0.5, sigma = -1 }\n", "llm.ttft.sigma", "> 0"),
        ("[llm]\nttft = nan\n", "llm.ttft.value", "nan"),
        ("[stt]\nfinal_delay = -0.2\n", "stt.final_delay.value", ">= 0"),
        ("[llm]\nttft = 'weibull'\n", "llm.ttft", "unknown delay preset"),
        ("[run]\nseed = 'abc'\n", "run.seed", "integer"),
        ("[policy]\npoll_interval = 0\n", "policy.poll_interval", "greater than 0"),
        ("[bogus]\nx = 1\n", "bogus", "unknown key"),
    ],
)
def test_bad_scenarios_name_the_file_and_the_key(tmp_path: Path, body: str, field: str, words: str):
    scenario = write_scenario(tmp_path, body)
    out = tmp_path / "out"
    line = one_line_error(invoke("run", scenario, "--out", out))
    assert "bad.toml" in line and f": {field}:" in line and words in line
    assert not out.exists()


def test_bad_override_names_the_override(tmp_path: Path):
    line = one_line_error(invoke("run", DEMO_SCENARIO, "--set", "llm.ttft=-1", "--out", tmp_path / "o"))
    assert "--set llm.ttft" in line
    assert not (tmp_path / "o").exists()


def test_invalid_toml_and_missing_file(tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[run\n", encoding="utf-8")
    assert "broken.toml" in one_line_error(invoke("run", broken))
    assert "not found" in one_line_error(invoke("run", tmp_path / "missing.toml"))


def copy_demo(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DEMO_DATA, data)
    return data


def test_mono_wav_is_refused_and_nothing_is_written(tmp_path: Path):
    data = copy_demo(tmp_path)
    audio, rate = sf.read(data / "audio" / "demo.wav", always_2d=True)
    sf.write(data / "audio" / "demo.wav", audio[:, 0], rate)
    out = tmp_path / "out"
    line = one_line_error(invoke("run", write_scenario(tmp_path, "", data), "--out", out))
    assert "demo.wav" in line and "channels" in line
    assert not out.exists()


def test_malformed_transcript_and_oracle_raw_are_refused(tmp_path: Path):
    data = copy_demo(tmp_path)
    (data / "text" / "demo.json").write_text('[{"speaker": "A", "word": "hi"', encoding="utf-8")
    line = one_line_error(invoke("run", write_scenario(tmp_path, "", data), "--out", tmp_path / "o"))
    assert "demo.json" in line and "JSON" in line

    data2 = tmp_path / "d2"
    shutil.copytree(DEMO_DATA, data2)
    entries = json.loads((data2 / "oracle_raw" / "demo.json").read_text())
    entries[1]["channel"] = 7
    (data2 / "oracle_raw" / "demo.json").write_text(json.dumps(entries))
    line = one_line_error(invoke("run", write_scenario(tmp_path, "", data2), "--out", tmp_path / "o"))
    assert "oracle_raw" in line and "[1].channel" in line


def test_words_past_the_end_of_the_audio_are_refused(tmp_path: Path):
    data = copy_demo(tmp_path)
    words = json.loads((data / "text" / "demo.json").read_text())
    words[-1]["end"] = 999.0
    (data / "text" / "demo.json").write_text(json.dumps(words))
    line = one_line_error(invoke("run", write_scenario(tmp_path, "", data), "--out", tmp_path / "o"))
    assert "demo.json" in line and "end" in line


def test_wrong_sample_rate_is_resampled_not_refused(tmp_path: Path):
    """Any sample rate is fine: the loader resamples to 24 kHz with soxr."""
    data = copy_demo(tmp_path)
    audio, rate = sf.read(data / "audio" / "demo.wav", always_2d=True)
    sf.write(data / "audio" / "demo.wav", audio[::2].astype(np.float32), rate // 2)
    result = invoke("run", write_scenario(tmp_path, "", data), "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 0, result.output


def test_trace_show_rejects_garbage_and_reads_partial_traces(tmp_path: Path):
    garbage = tmp_path / "g.arrows"
    garbage.write_bytes(b"not arrow at all")
    assert "g.arrows" in one_line_error(invoke("trace", "show", garbage))
    assert invoke("run", DEMO_SCENARIO, "--out", tmp_path / "run", "--quiet").exit_code == 0
    raw = (tmp_path / "run" / "trace.arrows").read_bytes()
    (tmp_path / "torn.arrows").write_bytes(raw[: len(raw) - 100])
    shown = invoke("trace", "show", tmp_path / "torn.arrows")
    assert shown.exit_code == 0 and "PARTIAL" in shown.output


def test_validate_and_presets_commands():
    assert invoke("validate", DEMO_SCENARIO).exit_code == 0
    presets = invoke("presets")
    assert presets.exit_code == 0 and "gpt-4.1-ttft" in presets.output


def write_sweep(tmp_path: Path) -> Path:
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        f"""
name = "cli-sweep"
base = "{DEMO_SCENARIO}"
seeds = 2
design = "grid"

[set]
"llm.ttft" = {{ kind = "lognormal", median = 0.73, sigma = 0.32 }}

[parameters]
"llm.ttft.median" = [0.3, 3.0]
""",
        encoding="utf-8",
    )
    return spec


def test_sweep_then_report_draws_robustness_curves(tmp_path: Path):
    out = tmp_path / "sw"
    result = invoke("sweep", write_sweep(tmp_path), "--out", out, "--workers", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "4 runs: 4 run now, 0 reused, 0 failed" in result.output
    assert (out / "results.parquet").exists()
    again = invoke("sweep", write_sweep(tmp_path), "--out", out, "--workers", "1", "--quiet")
    assert "4 runs: 0 run now, 4 reused, 0 failed" in again.output
    shown = invoke("report", out)
    assert shown.exit_code == 0, shown.output
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert 'src="curves-llm.ttft.median.png"' in html or "curves-llm.ttft.median.png" in html
    assert (out / "report" / "curves-llm.ttft.median.png").stat().st_size > 10_000


def test_report_of_a_run_has_timeline_and_perfetto(tmp_path: Path):
    assert invoke("run", DEMO_SCENARIO, "--out", tmp_path / "run", "--quiet").exit_code == 0
    result = invoke("report", tmp_path / "run" / "trace.arrows")
    assert result.exit_code == 0, result.output
    for name in ("index.html", "timeline.png", "trace.perfetto.json"):
        assert (tmp_path / "run" / "report" / name).exists()


def test_check_exits_1_when_a_threshold_fails(tmp_path: Path):
    base = REPO / "scenarios" / "checks" / "robustness.toml"
    passed = invoke(
        "check", base, "--out", tmp_path / "ok", "--workers", "1", "--quiet", "--junit", tmp_path / "ok.xml"
    )
    assert passed.exit_code == 0, passed.output
    assert (tmp_path / "ok.xml").exists()
    strict = tmp_path / "strict.toml"
    text = base.read_text(encoding="utf-8").replace('base = "', f'base = "{base.parent}/')
    strict.write_text(text.replace("value = 0.5", "value = 0.01", 1), encoding="utf-8")
    failed = invoke("check", strict, "--out", tmp_path / "bad", "--workers", "1", "--quiet")
    assert failed.exit_code == 1, failed.output
    assert "FAIL" in failed.output.upper()


def test_serve_llm_refuses_a_non_loopback_host_and_bad_faults():
    result = invoke("serve-llm", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 2
    result = invoke("serve-llm", "--fault", "meteor=0.5", "--port", "0")
    assert result.exit_code == 2


# -- paper cuts: --version, presets, serve-llm's options, trace show filters, validate, --set --------


def test_version_names_kame_sim_moshi_and_torch():
    from importlib import metadata

    from kame_sim import __version__

    result = invoke("--version")
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith(f"kame-sim {__version__} (python ") and "\n" not in line
    for name in ("moshi", "torch"):
        try:
            assert f"{name} {metadata.version(name)}" in line
        except metadata.PackageNotFoundError:
            assert f"{name} not installed" in line


def test_presets_are_not_cut_when_piped():
    from kame_sim.delays import PRESETS

    result = invoke("presets")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, preset in PRESETS.items():
        (row,) = [line for line in lines if line.startswith(f"│ {name} ")]
        assert preset.source in row and preset.spec.describe() in row


def serve_llm_command():
    import typer

    return typer.main.get_command(app).commands["serve-llm"]  # type: ignore[attr-defined]


def test_serve_llm_has_one_described_option_per_setting():
    import typer

    from kame_sim.cli import SERVE_LLM_PORT
    from kame_sim.llm.serve import DEFAULT_PORT, ServeLlmConfig

    options = {p.opts[0]: p for p in serve_llm_command().params}
    assert all(p.help for p in options.values()), [o for o, p in options.items() if not p.help]
    per_setting = {
        "conversation_path": "--conversation",
        "conversation_id": "--id",
        "models": "--model",
        "fault_probabilities": "--fault",
        "fault_schedule": "--schedule",
        "fault_after_chunks": "--fault-after",
    }
    for setting in ServeLlmConfig.model_fields:
        assert per_setting.get(setting, "--" + setting.replace("_", "-")) in options, setting
    assert SERVE_LLM_PORT == DEFAULT_PORT
    # rich reads "[...]" in help text as markup and drops it: no option may lose its words that way
    commands = [typer.main.get_command(app)]
    while commands:
        command = commands.pop()
        commands.extend(getattr(command, "commands", {}).values())
        for param in command.params:
            assert "[" not in (getattr(param, "help", None) or ""), (command.name, param.name)
    shown = invoke("serve-llm", "--help")
    assert shown.exit_code == 0 and "--fault-after" in shown.output and "--allow-remote" in shown.output


def test_serve_llm_options_reach_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import kame_sim.llm.serve as serve

    served: list[tuple] = []
    monkeypatch.setattr(serve, "serve_forever", lambda *args: served.append(args))
    config = tmp_path / "serve.toml"
    config.write_text('seed = 9\nrepeat_schedule = true\nfault_schedule = ["drop"]\n', encoding="utf-8")
    result = invoke(
        "serve-llm", "--port", "0", "--config", config, "--content", "fixed:hi there",
        "--ttft", "gpt-4.1-ttft", "--inter-chunk", "0.01", "--fault", "stall=0.1", "--stall-seconds", "2",
        "--fault-after", "0",
        "--model", "a", "--model", "b", "--error-status", "502", "--words-per-chunk", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ((settings, host, port, allow_remote),) = served
    assert (host, port, allow_remote) == ("127.0.0.1", 0, False)
    assert settings.content == "fixed:hi there" and settings.inter_chunk.mean() == 0.01
    assert settings.fault_probabilities == {"stall": 0.1} and settings.models == ("a", "b")
    assert (settings.stall_seconds, settings.fault_after_chunks, settings.error_status) == (2.0, 0, 502)
    assert settings.seed == 9 and settings.fault_schedule == ("drop",) and settings.repeat_schedule
    assert settings.words_per_chunk == 3
    served.clear()
    assert invoke("serve-llm", "--config", config, "--no-repeat-schedule", "--seed", "1").exit_code == 0
    assert served[0][0].repeat_schedule is False and served[0][0].seed == 1 and served[0][2] == 8089


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "-1"], "--port"),
        (["--error-status", "404"], "--error-status"),
        (["--seed", "-1"], "--seed"),
        (["--words-per-chunk", "0"], "--words-per-chunk"),
        (["--stall-seconds", "-1"], "--stall-seconds"),
        (["--fault-after", "-1"], "--fault-after"),
        (["--fault", "stall=0.7", "--fault", "drop=0.6"], "--fault"),
        (["--schedule", "ok,meteor"], "--schedule"),
        (["--ttft", "weibull"], "--ttft"),
        (["--host", "0.0.0.0"], "--host"),
    ],
)
def test_serve_llm_bad_options_are_one_line_naming_the_option(args: list[str], field: str):
    line = one_line_error(invoke("serve-llm", *args))
    assert line.startswith(f"error: <cli>: {field}: "), line


def test_python_m_serve_runs_the_same_command():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "kame_sim.cli", "serve-llm", "--port", "70000"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "--port: must be 0..65535" in proc.stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("show") / "run"
    assert invoke("run", DEMO_SCENARIO, "--out", out, "--quiet").exit_code == 0
    return out


def json_rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_trace_show_selects_rows_by_event_and_time(demo_run: Path):
    from kame_sim.trace import read_trace

    table = read_trace(demo_run).table
    everything = json_rows(invoke("trace", "show", demo_run, "--json"))
    assert len(everything) == table.num_rows and everything[0]["event"] == "run_start"
    starts = json_rows(invoke("trace", "show", demo_run, "--json", "--event", "llm_start,llm_cancel"))
    repeated = json_rows(
        invoke("trace", "show", demo_run, "--json", "--event", "llm_start", "--event", "llm_cancel")
    )
    assert starts == repeated and {r["event"] for r in starts} == {"llm_start", "llm_cancel"}
    assert len(starts) == sum(1 for e in table["event"].to_pylist() if e in ("llm_start", "llm_cancel"))
    assert [r["seq"] for r in starts] == sorted(r["seq"] for r in starts)
    window = json_rows(
        invoke("trace", "show", demo_run, "--json", "--event", "llm_start", "--from", "5", "--to", "9")
    )
    assert window and all(5 <= r["t_sim"] <= 9 for r in window)
    assert window == [r for r in starts if r["event"] == "llm_start" and 5 <= r["t_sim"] <= 9]
    first_two = json_rows(
        invoke("trace", "show", demo_run, "--json", "--event", "llm_start", "--events", "2")
    )
    assert first_two == [r for r in starts if r["event"] == "llm_start"][:2]
    # without --json: the summary, then the selected rows (all of them once a filter is given)
    shown = invoke("trace", "show", demo_run, "--event", "llm_adopt,stt_final", "--to", "10")
    assert shown.exit_code == 0 and "LLM streams started" in shown.output
    finals = [r for r in everything if r["event"] == "stt_final" and r["t_sim"] <= 10]
    assert shown.output.count("'stt_final'") == len(finals) > 0 and "'llm_start'" not in shown.output
    assert "'event'" not in invoke("trace", "show", demo_run).output  # no filter, no --events: no rows


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (["--event", "llm_strat"], "--event", "did you mean llm_start?"),
        (["--from", "9", "--to", "5"], "--to", "before --from"),
        (["--from", "nan"], "--from", "finite"),
        (["--events", "-1"], "--events", "at least 0"),
    ],
)
def test_trace_show_bad_filters(demo_run: Path, args: list[str], field: str, words: str):
    line = one_line_error(invoke("trace", "show", demo_run, *args))
    assert f"<cli>: {field}: " in line and words in line


def whisper_scenario(tmp_path: Path, model_dir: Path, extra: str = "") -> Path:
    path = tmp_path / "whisper.toml"
    path.write_text(
        f'[conversation]\npath = "{DEMO_DATA}"\n[stt]\nkind = "whisper"\nmodel_dir = "{model_dir}"\n{extra}',
        encoding="utf-8",
    )
    return path


def test_validate_never_runs_a_recogniser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import kame_sim.stt.whisper as whisper

    def refuse(*args, **kwargs):
        raise AssertionError("validate ran the recogniser")

    monkeypatch.setattr(whisper, "FasterWhisperDecoder", refuse)
    monkeypatch.setattr(whisper, "stream_events", refuse)
    model = tmp_path / "model"  # the files a model needs, checked by name only: nothing loads them
    model.mkdir()
    for name in whisper.REQUIRED_MODEL_FILES:
        (model / name).write_bytes(b"")
    stt_cassette, llm_cassette = tmp_path / "stt.arrows", tmp_path / "llm.arrows"
    stt_cassette.write_bytes(b"recorded")
    llm_cassette.write_bytes(b"recorded")
    extra = (
        f'cassette = "{stt_cassette}"\ncassette_mode = "record"\n'
        f'[llm]\ncassette = "{llm_cassette}"\ncassette_mode = "record"\n'
    )
    result = invoke("validate", whisper_scenario(tmp_path, model, extra))
    assert result.exit_code == 0, result.output
    assert stt_cassette.read_bytes() == llm_cassette.read_bytes() == b"recorded"  # record mode: untouched

    (model / "tokenizer.json").unlink()
    line = one_line_error(invoke("validate", whisper_scenario(tmp_path, model)))
    assert "stt.model_dir" in line and "tokenizer.json" in line
    line = one_line_error(invoke("validate", whisper_scenario(tmp_path, tmp_path / "nope")))
    assert "stt.model_dir" in line and "not found" in line
    (model / "tokenizer.json").write_bytes(b"")
    missing = f'cassette = "{tmp_path / "none.arrows"}"\ncassette_mode = "replay"\n'
    line = one_line_error(invoke("validate", whisper_scenario(tmp_path, model, missing)))
    assert "stt.cassette" in line and "not found" in line


def test_validate_of_a_live_llm_checks_the_key_and_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("KAME_SIM_TEST_KEY", raising=False)
    path = write_scenario(
        tmp_path,
        '[llm]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "KAME_SIM_TEST_KEY"\n',
    )
    assert "llm.api_key_env" in one_line_error(invoke("validate", path))
    monkeypatch.setenv("KAME_SIM_TEST_KEY", "dummy")
    assert invoke("validate", path).exit_code == 0  # port 9 (discard) is never contacted


def test_sweep_and_check_take_set(tmp_path: Path):
    out = tmp_path / "sw"
    spec = write_sweep(tmp_path)
    result = invoke(
        "sweep", spec, "--out", out, "--workers", "1", "--quiet", "--set", "policy.kind=multiplexer"
    )
    assert result.exit_code == 0, result.output
    resolved = json.loads((out / "sweep.resolved.json").read_text())
    assert resolved["cli_set"] == {"policy.kind": "multiplexer"}
    for run in resolved["runs"]:
        scenario = json.loads((out / "runs" / run["folder"] / "scenario.resolved.json").read_text())
        assert scenario["policy"]["kind"] == "multiplexer"
    again = invoke("sweep", spec, "--out", out, "--workers", "1", "--quiet")
    assert "4 runs: 4 run now, 0 reused" in again.output  # resume notices the change
    line = one_line_error(invoke("sweep", spec, "--out", out, "--set", "llm.ttft.median=1"))
    assert "--set llm.ttft.median" in line and "varies" in line

    check = REPO / "scenarios" / "checks" / "robustness.toml"
    ran = invoke(
        "check",
        check,
        "--out",
        tmp_path / "ck",
        "--workers",
        "1",
        "--quiet",
        "--set",
        "policy.kind=multiplexer",
    )
    assert ran.exit_code in (0, 1), ran.output
    checked = json.loads((tmp_path / "ck" / "sweep.resolved.json").read_text())
    assert checked["cli_set"] == {"policy.kind": "multiplexer"}
    assert "--set run.seed" in one_line_error(
        invoke("check", check, "--out", tmp_path / "ck2", "--set", "run.seed=1")
    )
