"""Argument checks shared by the package: a bad value gets an error that names the parameter.

Python and NumPy numbers are both accepted; ``True``/``False`` never count as numbers.
"""

from __future__ import annotations

import numbers


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is an integer >= 1, else a TypeError or ValueError naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_real(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a real number, else a TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_probability(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a real number in ``[0, 1)``, else a TypeError or
    ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number in [0, 1), got {type(value).__name__} {value!r}"
        )
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False``, else a TypeError naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__}")
    return value
