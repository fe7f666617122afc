"""The engine: parameters, layers, losses, optimizers, datasets, metrics and the training loop.

No I/O and no plugin machinery here; everything is plain numpy with a leading replica axis.
"""

from expsvc.core.data import Dataset, DataSplit, batch_indices, steps_per_epoch
from expsvc.core.gradcheck import GradcheckResult, gradcheck, gradcheck_layer, gradcheck_loss
from expsvc.core.layer import Layer, Sequential, ShapeError
from expsvc.core.loss import Loss
from expsvc.core.metric import Metric
from expsvc.core.optim import Optimizer, Scheduler
from expsvc.core.params import ParamBuffer, Parameter
from expsvc.core.rng import ReplicaRandom, component_roots, replica_streams
from expsvc.core.train import SplitEvaluator, Trainer, TrainHooks, TrainResult, evaluate, predict

__all__ = [
    "DataSplit",
    "Dataset",
    "GradcheckResult",
    "Layer",
    "Loss",
    "Metric",
    "Optimizer",
    "ParamBuffer",
    "Parameter",
    "ReplicaRandom",
    "Scheduler",
    "Sequential",
    "ShapeError",
    "SplitEvaluator",
    "TrainHooks",
    "TrainResult",
    "Trainer",
    "batch_indices",
    "component_roots",
    "evaluate",
    "gradcheck",
    "gradcheck_layer",
    "gradcheck_loss",
    "predict",
    "replica_streams",
    "steps_per_epoch",
]
