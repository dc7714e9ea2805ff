"""Training: objectives, metrics, optimizers and schedules, the training loop, checkpoints and plots.

Modules (import them directly; nothing heavy is imported here):

- ``losses``: pairwise-distance, masked-nucleotide, target and count losses and :class:`MultiTaskLoss`.
- ``metrics``: streaming regression, classification, distance and nucleotide metrics; best-metric direction.
- ``optim``: optimizers with named parameter groups (no decay on biases/norms, categorical LR) and ``find_lr``.
- ``schedulers``: learning-rate schedules behind a handle that knows its stepping interval.
"""
