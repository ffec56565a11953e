"""The real KAME front-end: Moshi's LM plus KAME's oracle input stream (torch + moshi).

This is the only package of kame-sim that imports torch; the simulation core never imports it.
Importing the package sets two environment defaults before moshi can read them:

* ``NO_TORCH_COMPILE=1``: moshi would otherwise spend 13–22 s in ``torch.compile`` on the first
  model call, for no gain on the tiny CPU models the tests and CI use.
* ``HF_HUB_OFFLINE=1``: checkpoints are local files only; a stray hub lookup must fail fast
  instead of hanging on a network that is not there.

``setdefault`` keeps an explicit user choice (e.g. ``NO_TORCH_COMPILE=`` on a GPU box). The
package itself imports nothing heavy, so ``tiny_configs`` stays importable without torch.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
