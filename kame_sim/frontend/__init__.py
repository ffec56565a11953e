"""The thing that speaks: the front-end protocol and its implementations.

``behavioural`` is a fast non-neural model; the real KAME/Moshi model (torch) lives in its own
module so that the simulation core never imports torch.
"""

from kame_sim.frontend.protocol import Frontend, SessionInfo

__all__ = ["Frontend", "SessionInfo"]
