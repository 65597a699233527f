"""Which model publishes: the lowest recent error, weighed by how each model does overall."""

import numpy as np

from models.selection import NONE, pooled_penalty, select


def test_the_fallback_publishes_until_a_model_has_enough_scored_points() -> None:
    mae = np.full((3, 2), np.nan)
    ready = np.array([[False, False], [True, False], [True, False]])
    assert select(mae, ready, fallback=2).tolist() == [2, NONE]


def test_equal_recent_errors_go_to_the_model_with_the_lower_squared_error() -> None:
    mae = np.array([[1.0], [1.0], [2.0]])
    mse = np.array([[9.0], [4.0], [1.0]])
    assert select(mae, np.ones((3, 1), bool), fallback=0, tie_break=mse).tolist() == [1]


def test_a_model_worse_over_all_series_needs_a_clear_lead_on_one() -> None:
    # model 0 is best on the small series by a hair and far worse on the large ones
    mae = np.array([[0.9, 0.9, 50.0], [1.0, 1.0, 10.0]])
    penalty = pooled_penalty(mae)
    assert penalty[1] < penalty[0]
    assert select(mae * penalty[:, None], np.ones((2, 3), bool), fallback=0).tolist() == [1, 1, 1]
