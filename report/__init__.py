"""Reports of the ablation runs: result stores, tables, figures, the write-up, the hand-in archive and
the grader (``mtl-ablate report``, ``export`` and ``grade``)."""
