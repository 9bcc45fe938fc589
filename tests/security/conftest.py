"""Hostile inputs, one test each through the real entry point, and property-based fuzzing.

Hypothesis runs a fixed, derandomised budget of examples per property in the default run, so the
suite takes the same time and finds the same things on every machine.
"""
from hypothesis import HealthCheck, settings

settings.register_profile("medtransfer", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("medtransfer")
