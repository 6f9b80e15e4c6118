"""`python -m flowam_fast.cli`: the same as the `flowam-fast` script."""
import sys

from . import main

sys.exit(main())
