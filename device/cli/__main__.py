"""`python -m device.cli`: the same as `edgeloop-agent` (the end-to-end tests and the demo start agents so)."""

import sys

from device.cli import main

if __name__ == "__main__":  # not when imported (the no-torch test imports every module)
    sys.exit(main())
