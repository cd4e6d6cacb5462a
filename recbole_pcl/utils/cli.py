"""What the command lines share: their exit status and one-line errors.

Exit status: 0 when everything finished; 1 when a comparison or experiment finished with some runs
failed (one line per failed run on stderr, after everything that finished was written); 2 for bad
input (a :class:`PCLError`: one line naming the key, file, column, task, path or value at fault),
and when every run of a comparison failed.
"""

import sys
import warnings

from recbole_pcl.utils.errors import PCLError


def exit_status(run):
    """Call ``run()`` and return the exit status for what it did (see the module's docstring).

    RecBole 1.2.1's own code warns about today's pandas/numpy/torch on every run; those warnings say
    nothing about the user's input and would bury a one-line error, so they are not shown."""
    warnings.filterwarnings("ignore", module=r"recbole(\.|$)")
    try:
        result = run()
    except PCLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = result.get("failures") if isinstance(result, dict) else None
    if failed:
        for key, error in failed.items():
            print(
                f"failed: {key}: {error.strip().splitlines()[-1] if error.strip() else 'no message'}", file=sys.stderr
            )
        return 1
    return 0
