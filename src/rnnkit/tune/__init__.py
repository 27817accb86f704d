"""Hyperparameter search (``rnnkit tune``) over ordinary rnnkit runs.

``space`` reads the search space, ``runner`` trains one configuration resumably, ``pruning`` stops
unpromising trials, ``study`` drives Optuna, ``studydir`` names the study's files and ``report``
writes its table, ``best.yaml`` and plots. Only ``study`` and ``report`` need Optuna.
"""
