"""The command line as a user meets it: exit codes, one-line errors naming file and field, and
nothing half-written when the input is bad."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO_SCENARIO, REPO
from typer.testing import CliRunner

from kame_sim.cli import app

runner = CliRunner()
DEMO_DATA = REPO / "scenarios" / "data" / "demo"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


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
