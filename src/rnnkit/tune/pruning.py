"""Pruning: a trial reports its validation score after every epoch and stops when Optuna's pruner
says it is unpromising.

A pruned trial is not aborted: it stops like an early-stopped run, so its folder is a complete run
(best checkpoint, test metrics) that ``rnnkit compare`` can show. The decision is stored on the
trial at once (user attribute ``pruned_at_epoch``), so a study killed between the decision and the
end of the run still records the trial as pruned when it resumes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rnnkit.training.callbacks import Callback

if TYPE_CHECKING:
    from rnnkit.training.trainer import Trainer

logger = logging.getLogger(__name__)

PRUNED_AT = "pruned_at_epoch"


class TrialPruning(Callback):
    """Report the run's monitor to an Optuna ``trial`` each epoch; stop training when it should be
    pruned. The trainer's resolved ``train.monitor`` is read, so ``auto`` follows the data's task."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        self.trial.report(record[trainer.cfg.monitor], epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr(PRUNED_AT, epoch)
            trainer.should_stop = True
            logger.debug("trial %d pruned after epoch %d", self.trial.number, epoch)
