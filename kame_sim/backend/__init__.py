"""What stands behind the oracle: STT, LLM content, KAME's stream-manager policy, LLM streams."""
