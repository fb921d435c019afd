"""The package's seedable random number generator.

Layer initialisation (:mod:`cyconv.nn`) draws from one :class:`numpy.random.Generator`
held here, so that ``cyconv.manual_seed(s)`` makes every later layer construction
reproducible, as ``torch.manual_seed`` does for PyTorch.  Until a seed is set the
generator is seeded from fresh OS entropy, as ``numpy.random.default_rng()`` is.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["manual_seed", "get_generator"]

_generator = np.random.default_rng()


def manual_seed(seed) -> np.random.Generator:
    """Seed the generator that :mod:`cyconv.nn` draws initial weights from.

    Parameters
    ----------
    seed : int
        A non-negative integer.

    Returns
    -------
    numpy.random.Generator
        The new generator (also returned by :func:`get_generator` from now on).

    Examples
    --------
    >>> import cyconv
    >>> _ = cyconv.manual_seed(0)
    >>> a = cyconv.nn.Linear(3, 2).weight.data
    >>> _ = cyconv.manual_seed(0)
    >>> b = cyconv.nn.Linear(3, 2).weight.data
    >>> bool((a == b).all())
    True
    """
    global _generator
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def get_generator() -> np.random.Generator:
    """The generator layer initialisation draws from (see :func:`manual_seed`)."""
    return _generator
