"""kame-sim: a discrete-event test bench for KAME-style tandem speech-to-speech systems.

The simulation core (everything except ``kame_sim.frontend.kame``) imports without torch.
"""

__version__ = "0.1.0"
