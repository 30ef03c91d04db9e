#!/usr/bin/env python
"""Run the SaeRL reproduction: the same as ``saerl-zoo reproduce`` (see ``--help``).

    python scripts/reproduce.py --quick --out runs/reproduce-quick      # minutes
    python scripts/reproduce.py --out runs/reproduce --jobs 2             # the full run
    python scripts/reproduce.py --out runs/reproduce --device cuda        # on a GPU machine
"""

import sys

from saerl_zoo.cli import main

if __name__ == "__main__":
    main(["reproduce", *sys.argv[1:]], prog_name="saerl-zoo")
