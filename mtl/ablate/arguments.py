"""Command-line pieces shared by ``mtl-ablate``'s subcommands: a parser whose errors suggest the flag or
choice the user meant, and the ``mtl-ablate ...`` command lines that hints print.

A hint must work when pasted: it repeats the user's own non-default ``--ablations-dir``, ``--runs-dir``
and ``--profile``, since without them the suggested command would look at other runs.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from mtl.config import did_you_mean
from mtl.run.layout import default_ablations_dir, default_runs_dir

from .options import PlanOptions

# "argument COMMAND: invalid choice: 'lst' (choose from 'list', 'show')" -- Python 3.12+ drops the quotes.
_INVALID_CHOICE = re.compile(r"invalid choice: '?(?P<word>[^' ]*)'? \(choose from (?P<choices>.*)\)$")


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


class SuggestingParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors name the closest flag or choice ("did you mean '--profile'?").

    Unknown flags are reported by the subcommand's own parser, so the suggestion comes from that
    subcommand's flags (``mtl-ablate run --profle``), not from the top-level ones."""

    # Any: like ArgumentParser's, it returns the namespace given, else a new argparse.Namespace.
    def parse_args(self, args: Optional[Iterable[str]] = None, namespace: Any = None) -> Any:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            (self._chosen_subparser(parsed) or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _chosen_subparser(self, parsed: argparse.Namespace) -> Optional[argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(parsed, action.dest or "", None) or "")
                if isinstance(chosen, SuggestingParser):
                    return chosen._chosen_subparser(parsed) or chosen
        return None

    def error(self, message: str) -> Any:  # type: ignore[override]
        super().error(message + self.suggestion(message))

    def suggestion(self, message: str) -> str:
        """"; did you mean ...?" for the first unknown flag or invalid choice in ``message``, else ""."""
        choice = _INVALID_CHOICE.search(message)
        if choice:
            choices = [c.strip().strip("'") for c in choice.group("choices").split(",")]
            return did_you_mean(choice.group("word"), choices)
        if message.startswith("unrecognized arguments: "):
            flags = [o for o in self._option_string_actions if o.startswith("--")]
            for word in message.removeprefix("unrecognized arguments: ").split():
                if word.startswith("--"):
                    flag = word.split("=", 1)[0]
                    # The closest flag only: a list of near misses reads as noise.
                    hint = did_you_mean(flag, difflib.get_close_matches(flag, flags, n=1, cutoff=0.6))
                    if hint:
                        return hint
        return ""


def _differs(path: Optional[Path], default: Path) -> bool:
    return path is not None and Path(path).resolve() != Path(default).resolve()


def command_line(subcommand: str, ids: Sequence[str] = (), *, profile: Optional[str] = None,
                 runs_dir: Optional[Path] = None, ablations_dir: Optional[Path] = None,
                 extra: Sequence[str] = ()) -> str:
    """``mtl-ablate SUBCOMMAND IDS...`` with the folders and profile that differ from the defaults, quoted
    for a POSIX shell."""
    words = ["mtl-ablate", subcommand, *ids]
    if _differs(ablations_dir, default_ablations_dir()):
        words += ["--ablations-dir", str(ablations_dir)]
    if _differs(runs_dir, default_runs_dir()):
        words += ["--runs-dir", str(runs_dir)]
    if profile:
        words += ["--profile", profile]
    return shlex.join([*words, *extra])


def command_from_args(args: PlanOptions, subcommand: str, ids: Sequence[str] = (),
                      extra: Sequence[str] = ()) -> str:
    """:func:`command_line` with the folders and profile of ``args``."""
    return command_line(subcommand, ids, profile=args.profile, runs_dir=args.runs_dir,
                        ablations_dir=args.ablations_dir, extra=extra)


def add_adhoc_arguments(parser: argparse.ArgumentParser) -> None:
    """``run``'s flags for an ad-hoc entry: a one-off grid from the command line instead of an entry file."""
    group = parser.add_argument_group(
        "ad-hoc entry (instead of IDs: plans, runs and reports like an entry file named adhoc.NAME)")
    group.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a config key and its values, one run per combination (repeat for more keys)")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a config key set for every run of the grid (repeatable)")
    group.add_argument("--base", default=None,
                       help="profile name or 'best of ENTRY' the grid starts from (default: --profile, else quick)")
    group.add_argument("--name", help="the entry's name: its id is adhoc.NAME (required with --grid/--set)")
    group.add_argument("--seeds", default="0", help="comma-separated seeds of each grid point (default: 0)")
    group.add_argument("--save", action="store_true",
                       help="also write the entry to the ablations folder (default: only beside its runs)")
