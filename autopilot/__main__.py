"""``python -m autopilot``: the same as the ``autopilot`` console script."""

from autopilot.cli import main

raise SystemExit(main())
