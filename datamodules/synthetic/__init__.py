"""Synthetic medical-image domains, generated deterministically from a seed (the offline default)."""
