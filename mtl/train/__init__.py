"""One training run (``mtl-train``): the engine that opens a run directory and builds the run once
(:mod:`mtl.train.engine`), the loop (:mod:`mtl.train.loop`) and the hooks that record it
(:mod:`mtl.train.hooks`), and the parts they use: evaluation, prediction, visualisation, optimizer,
losses, metrics, W&B tracking, the submission archive and runtime helpers."""
