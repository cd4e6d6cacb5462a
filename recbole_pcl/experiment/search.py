"""Search spaces of settings, as yaml declares them: ``{setting: {distribution: arguments}}`` with the
distributions ``choice``, ``grid_search`` (a list of values), ``uniform``, ``loguniform`` (``[low,
high]``) and ``randint`` (``[low, high)``), Ray Tune's names. Checked when loaded; sampled with a seeded
generator (a comparison's tuning) or handed to Ray Tune (:mod:`.tune`)."""

import math

from recbole_pcl.utils.errors import PCLError

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "grid_search")


def check_space(space, where, check=None):
    """``space`` checked: a known distribution with well-formed arguments for every setting, and, with
    ``check`` (``check(setting, value)`` raising :class:`PCLError`), every value or end of a range
    accepted as that setting. ``where`` names the space in errors."""
    if not isinstance(space, dict) or not space:
        raise PCLError(f"{where}: the search space must be a non-empty mapping of settings, got {space!r}")
    for key, spec in space.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise PCLError(
                f"{where}: '{key}' must be one of {', '.join(f'{{{d}: ...}}' for d in DISTRIBUTIONS)}, got {spec!r}"
            )
        kind, args = next(iter(spec.items()))
        for value in _checked_arguments(where, key, kind, args) if check else ():
            try:
                check(key, value)
            except PCLError as e:
                raise PCLError(f"{where}: '{key}': {value!r} is refused: {e}") from None
    return space


def _checked_arguments(where, key, kind, args):
    """The values of a distribution to check as settings: every choice, or both ends of a range."""
    if kind in ("choice", "grid_search"):
        if not isinstance(args, list) or not args:
            raise PCLError(f"{where}: '{key}': {kind} needs a non-empty list of values, got {args!r}")
        return args
    numbers = (
        isinstance(args, list)
        and len(args) == 2
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    )
    if not numbers or not args[0] < args[1]:
        raise PCLError(f"{where}: '{key}': {kind} needs [low, high] with low < high, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise PCLError(f"{where}: '{key}': loguniform needs low > 0, got {args!r}")
    if kind == "randint":
        if not all(isinstance(a, int) for a in args):
            raise PCLError(f"{where}: '{key}': randint needs integers [low, high), got {args!r}")
        return [args[0], args[1] - 1]  # its upper end is excluded
    return args


def sample(space, rng):
    """One setting of every key of ``space``, drawn with the numpy generator ``rng`` (in key order)."""
    drawn = {}
    for key in sorted(space):
        kind, args = next(iter(space[key].items()))
        if kind in ("choice", "grid_search"):
            drawn[key] = args[int(rng.integers(len(args)))]
        elif kind == "uniform":
            drawn[key] = float(rng.uniform(*args))
        elif kind == "loguniform":
            drawn[key] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
        else:
            drawn[key] = int(rng.integers(*args))
    return drawn
