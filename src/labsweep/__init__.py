"""labsweep: the course's deep-learning labs as reproducible Hydra sweeps logged to MLflow."""

__version__ = "0.1.0"
