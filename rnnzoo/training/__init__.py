"""Training: the loop (:mod:`.loop`), one step (:mod:`.step`), evaluation,
the optimizer, the run folder and signals, each in a module of its own."""

from rnnzoo.training.loop import Trainer
from rnnzoo.training.run import LoadedRun, RunFolder, load_run

__all__ = ["LoadedRun", "RunFolder", "Trainer", "load_run"]
