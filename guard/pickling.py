"""Cheaper pickling of frozen, slotted dataclasses (every parsed message crosses a pipe).

The daemon's analyser is a worker process: each message's :class:`ParsedMessage` and
:class:`Verdict` come back pickled, a dozen small frozen ``slots=True`` dataclasses each
(addresses, URLs, authentication results, reasons). For those, ``dataclasses`` pickles through
``__getstate__``/``__setstate__`` functions that call :func:`dataclasses.fields` on every object,
which costs more than the rest of their pickling. :func:`fast_pickle` gives a class the same
state (its field values, in order) from field names and slot setters looked up once.
"""

from __future__ import annotations

import dataclasses
import operator


def fast_pickle(cls):
    """Class decorator, applied above ``@dataclass(frozen=True, slots=True)``."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    setters = tuple(cls.__dict__[n].__set__ for n in names)  # the slots' own descriptors: no frozen check
    get = operator.attrgetter(*names)

    if len(names) == 1:
        def __getstate__(self):
            return (get(self),)
    else:
        def __getstate__(self):
            return get(self)

    def __setstate__(self, state):
        for setter, value in zip(setters, state):
            setter(self, value)

    cls.__getstate__ = __getstate__
    cls.__setstate__ = __setstate__
    return cls
