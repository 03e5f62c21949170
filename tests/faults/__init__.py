"""Fault injection for the reliability tests and ``bench/fault_tally.py``: training processes that are
killed at random moments, writes that fail as on a full disk, damaged datasets, and the checks that
nothing in a run directory was lost or left unreadable."""
