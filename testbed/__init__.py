"""Propagation-field testbed: students, objectives, field metrics, training, experiments and the CLI."""

__version__ = "0.1.0"
