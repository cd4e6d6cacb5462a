"""What the command lines share: bad input as one line and exit status 2."""

import sys
import warnings

from recbole_pcl.utils.errors import PCLError


def exit_status(run):
    """Call ``run()``; 0, or 2 after printing a :class:`PCLError` as one line on stderr.

    RecBole 1.2.1's own code warns about today's pandas/numpy/torch on every run; those warnings say
    nothing about the user's input and would bury a one-line error, so they are not shown."""
    warnings.filterwarnings("ignore", module=r"recbole(\.|$)")
    try:
        run()
    except PCLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
