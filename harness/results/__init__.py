"""Results: the on-disk contract that reports, the gate and CI read (see schema.py)."""
