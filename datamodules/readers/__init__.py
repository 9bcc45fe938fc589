"""Readers of the real data sets in their native formats; each validates its input up front."""
