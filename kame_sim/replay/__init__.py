"""Importers: turn logs of real KAME sessions into kame-sim traces (same schema as simulated runs)."""

from kame_sim.replay.kame_logs import default_import_dir, import_kame_logs

__all__ = ["default_import_dir", "import_kame_logs"]
