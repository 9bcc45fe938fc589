"""Design: what a study is, before anything runs.

Owns the config (schema, presets, overrides, every value check), the model zoo and its pairs, the
identities that make two pieces of work the same, the resources a config asks for, and the work
graph (`Scheduler`). Pure: reads no data and touches no store. May import the library packages
(`datamodules`, `attacks`, `lightning_modules`) only.
"""
