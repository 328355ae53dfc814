"""kd_ref: a pure-NumPy reference implementation of knowledge distillation.

Follows G. Papamakarios, "Distilling Model Knowledge" (MSc thesis, Edinburgh, 2015):
hand-written forward propagation, backprop and R{backprop} (appendices B and C),
with the samplers, EM and partition-function estimators the three chapters build on.
"""
from .mlp import MLP
from .optim import SGD, Adadelta, Adam, ConstantSchedule, LinearDecay, PowerDecay, train

__version__ = "0.1.0"

__all__ = ["MLP", "SGD", "Adadelta", "Adam", "ConstantSchedule", "LinearDecay", "PowerDecay", "train"]
