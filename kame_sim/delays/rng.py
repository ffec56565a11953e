"""Independent, reproducible random streams, one per simulated component.

If every component drew from one generator, switching the LLM preset (which changes how many
numbers the LLM consumes) would shift every later STT draw too, and two runs meant to differ in
one factor would differ in all of them. Instead each component gets its own generator, seeded
from the run seed *and* the component's name. The name is hashed with CRC-32, which is the same
in every process; Python's ``hash()`` of a string is salted per process and would break
reproducibility.
"""

from __future__ import annotations

import zlib

import numpy as np


def component_seed(seed: int, component: str) -> np.random.SeedSequence:
    """The SeedSequence behind :func:`component_rng` (entropy = [seed, crc32(component)])."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(component, str) or not component:
        raise ValueError(f"component must be a non-empty string, got {component!r}")
    return np.random.SeedSequence([int(seed), zlib.crc32(component.encode("utf-8"))])


def component_rng(seed: int, component: str) -> np.random.Generator:
    """The generator for ``component`` (e.g. "stt.final", "llm.ttft") in a run seeded ``seed``."""
    return np.random.Generator(np.random.PCG64(component_seed(seed, component)))
