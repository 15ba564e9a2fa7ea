"""features.counted is np.unique(values, return_counts=True)."""

import numpy as np
import pytest

from guard.classification.features import counted


@pytest.mark.parametrize("dtype", [np.uint64, np.uint16, np.int64])
def test_counted_is_unique_with_counts(dtype):
    rng = np.random.default_rng(4)
    cases = [np.empty(0, dtype=dtype), np.zeros(1, dtype=dtype), np.arange(5, dtype=dtype)[::-1]]
    cases += [rng.integers(0, high, size, dtype=dtype) for high in (3, 1000, np.iinfo(dtype).max) for size in (1, 2, 50, 3000)]
    for values in cases:
        got, expected = counted(values), np.unique(values, return_counts=True)
        for a, b in zip(got, expected):
            assert a.dtype == b.dtype and np.array_equal(a, b)
