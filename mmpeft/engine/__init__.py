"""Registered hooks: freezing and accounting, MiMi pruning, merge on save."""
