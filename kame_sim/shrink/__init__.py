"""Minimal failing delay schedules (``kame-sim shrink``; docs/shrink.md).

``condition`` parses ``"METRIC OP VALUE"``; ``ddmin`` holds the pure searches (delta debugging,
bisection); ``nominal`` the nominal delay per kind; ``search`` the shrinking over schedule
entries; ``replay`` runs a scenario under a schedule in-process; ``run`` is the command.
"""
