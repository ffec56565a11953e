"""Streaming speech recognition: simulated from word timings, or faster-whisper, and STT cassettes."""
