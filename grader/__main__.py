"""``python -m grader``: see grader/cli.py for the commands and options."""

from grader.cli import main

raise SystemExit(main())
