"""The back-end LLM: content sources, timed plans, the live OpenAI-compatible back-end, cassettes
and the loopback server (serve-llm)."""
