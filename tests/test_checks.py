import numpy as np
import pytest

from llmhelpers.checks import check_bool, check_positive_int, check_probability, check_real


def test_positive_int_accepts_python_and_numpy_integers():
    assert check_positive_int("n", 3) == 3
    value = check_positive_int("n", np.int64(7))
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (2.0, TypeError),
                                        (True, TypeError), ("3", TypeError), (None, TypeError)])
def test_positive_int_rejects_with_the_name(bad, error):
    with pytest.raises(error, match="n_layers must be a positive integer"):
        check_positive_int("n_layers", bad)


def test_probability_range_and_nan():
    assert check_probability("dropout", np.float32(0.25)) == 0.25
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
            check_probability("dropout", bad)
    with pytest.raises(TypeError, match="dropout"):
        check_probability("dropout", False)


def test_real_and_bool():
    assert check_real("eps", 1) == 1.0
    with pytest.raises(TypeError, match="eps must be a real number"):
        check_real("eps", "1e-5")
    assert check_bool("flag", False) is False
    with pytest.raises(TypeError, match="flag must be a bool"):
        check_bool("flag", 0)
