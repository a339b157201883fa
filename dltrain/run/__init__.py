"""Runs end to end: a run directory from a config (train), and what reads it back (evaluate,
predict, load a checkpoint). Ties data, engine and checkpoints together; the CLI and export
call it."""
