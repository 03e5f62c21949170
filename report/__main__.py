import sys

from report.commands import main

sys.exit(main())
