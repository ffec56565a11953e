"""KAME's back-end policies: what the server does with ASR results (when to start an LLM stream,
which stream's text reaches the oracle), as pure decision logic testable without SimPy."""
