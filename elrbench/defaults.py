"""The registry entries that are also defaults, named once: a grid's default optimizer, warm-up and
schedule, the report's default baseline, and what the weight-dynamics model describes (plain SGD at a
constant learning rate without warm-up). A light module (no torch), so that readers of a study folder
can use the names without importing the training code."""
from __future__ import annotations

DEFAULT_OPTIMIZER = "sgd"  # plain SGD
NO_WARMUP = "none"  # the baseline every warm-up is compared against by default
CONSTANT = "constant"  # the default schedule: the target lr at every step
