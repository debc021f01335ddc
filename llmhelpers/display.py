"""Show the package's real source code in a notebook, so the code is the explanation."""

from __future__ import annotations

import inspect

from IPython.display import Code


def show_source(obj: object) -> Code:
    """Syntax-highlighted source of a function, class or method from ``llmhelpers``."""
    return Code(inspect.getsource(obj), language="python")
