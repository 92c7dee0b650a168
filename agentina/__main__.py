"""`python -m agentina`: how a versioned install runs (PYTHONPATH=<state>/versions/<v>)."""

import sys

from agentina.cli import main

if __name__ == "__main__":
    sys.exit(main())
