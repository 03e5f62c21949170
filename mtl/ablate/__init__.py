"""The ``mtl-ablate`` command: entry registry, planner, scheduler and backends.

Data flows one way: ``ablations/*.yaml`` -> :mod:`mtl.ablate.entry` (validated entries) ->
:mod:`mtl.ablate.planner` (fully resolved run specs) -> :mod:`mtl.ablate.scheduler` (``mtl-train``
processes through :mod:`mtl.ablate.backends`) -> run directories.
"""
