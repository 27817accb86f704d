"""A trained run on disk: written by training, read by everything else.

* :mod:`rnnkit.runs.folder`: :class:`RunDir`, the name of every file in a run folder;
* :mod:`rnnkit.runs.checkpoint`: the checkpoint format (safetensors + verified JSON) and the
  ``checkpoints/`` folder's best/last/previous files;
* :mod:`rnnkit.runs.trained`: :func:`open_run`, a run's config, vocabulary, tokenizer, labels and
  best model in one :class:`TrainedRun`;
* :mod:`rnnkit.runs.ensemble`: an ensemble folder, several runs used as one classifier.
"""

from rnnkit.runs.folder import RunDir, default_run_dir
from rnnkit.runs.trained import TrainedRun, open_run

__all__ = ["RunDir", "TrainedRun", "default_run_dir", "open_run"]
