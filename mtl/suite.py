"""``mtl-ablate``: the suite's subcommands (``mtl.ablate.cli``) and the report's (``report.commands``) in one
command line. It sits above both packages, so that neither imports the other.
Exit codes: those of ``mtl.ablate.cli`` and ``report.commands``.
"""

from __future__ import annotations

import sys
from typing import Optional

from mtl.ablate.cli import run
from report.commands import register as register_report_commands


def main(argv: Optional[list[str]] = None) -> int:
    return run(argv, extra_commands=(register_report_commands,))


if __name__ == "__main__":
    sys.exit(main())
