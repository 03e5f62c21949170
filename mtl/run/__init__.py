"""The run directory: one typed model of its files (:mod:`mtl.run.model`), the one place that spells
their names (:mod:`mtl.run.layout`), one reader (:mod:`mtl.run.records`) and one writer of the status
(:mod:`mtl.run.status`), the trace's parser (:mod:`mtl.run.trace`), the summary file
(:mod:`mtl.run.summary`), the rule for a best point (:mod:`mtl.run.best`), atomic writes
(:mod:`mtl.run.io`), stop signals (:mod:`mtl.run.stopping`) and reopening a run after a kill
(:mod:`mtl.run.recovery`). docs/DESIGN.md §4 is the contract these modules keep.

Nothing in this package imports torch at import time: the suite and the reports read runs without it.
"""
