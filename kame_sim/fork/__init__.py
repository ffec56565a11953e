"""``kame-sim fork``: replay a run exactly up to a time, change the back-end from there, compare."""
