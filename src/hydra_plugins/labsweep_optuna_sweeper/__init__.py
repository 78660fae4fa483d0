"""labsweep's Hydra Sweeper over Optuna: ``hydra/sweeper=labsweep_optuna`` (the ``sweep=tune`` presets).

A Hydra plugin: Hydra imports every module of the ``hydra_plugins`` namespace package (it has no
``__init__.py`` of its own, so other plugins' folders join it) except those whose name starts with an
underscore, when it starts. So ``config`` (the options, in Hydra's ConfigStore) and
``labsweep_optuna_sweeper`` (the Sweeper class) import only Hydra; Optuna, MLflow and the loop itself
(``_impl``) are imported once a tuning multirun really starts.
"""
