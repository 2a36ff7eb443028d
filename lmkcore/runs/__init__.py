"""Runs: configured experiments from config to cached result (training, prediction, storage)."""
