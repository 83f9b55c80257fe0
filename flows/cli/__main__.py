"""`python -m flows.cli ARGS`: the same as `synth ARGS`."""

import sys

from flows.cli import main

sys.exit(main())
