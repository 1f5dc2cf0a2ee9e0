"""target-ssl: engine, the parts every training task shares.

Submodules are imported explicitly (``from engine.trainer import Task, fit``); nothing is imported
here so ``import engine`` stays cheap. The one training loop is :mod:`engine.trainer`: a task
(pretraining, detection, segmentation, ...) supplies its model, data, optimizer and per-batch
losses; the trainer owns distributed setup, precision, accumulation, clipping, the LR schedule,
the finite-loss guard, the skip budget, logging, checkpoints, exact resume and stop requests.
The other modules are the pieces it is built from (and that tasks use to build their parts).
"""
