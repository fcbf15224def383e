"""Split-conformal radii: the ceil((n+1)a)-th smallest calibration error, so that new errors from the
same distribution fall inside at the asked rate; and levels in between stored ones interpolate."""

from __future__ import annotations

import numpy as np
import pytest

from vss_models.timeseries.forecasters import conformal_radius, radius_at
from vss_models.timeseries.recipes import INTERVAL_LEVELS


def test_the_radius_is_the_conformal_rank_of_the_calibration_errors() -> None:
    errors = np.arange(1, 20, dtype=np.float32).reshape(19, 1, 1)  # n = 19: rank ceil(20 * 0.9) = 18
    assert conformal_radius(errors, (0.9,))[0, 0, 0] == 18.0
    assert conformal_radius(errors, (0.99,))[0, 0, 0] == 19.0  # capped at the largest


def test_new_errors_from_the_same_distribution_fall_inside_at_the_asked_rate() -> None:
    rng = np.random.default_rng(0)
    calibration, fresh = np.abs(rng.standard_t(4, (4000, 6, 5))), np.abs(rng.standard_t(4, (20000, 6, 5)))
    radius = conformal_radius(calibration.astype(np.float32))
    for level in (0.5, 0.8, 0.9, 0.95):
        inside = (fresh <= radius_at(radius, INTERVAL_LEVELS, level)).mean()
        assert inside == pytest.approx(level, abs=0.015)


def test_a_level_outside_the_stored_ones_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        radius_at(np.zeros((50, 6, 5), np.float32), INTERVAL_LEVELS, 0.995)
