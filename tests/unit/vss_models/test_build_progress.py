"""`vss models build` reports each training per epoch with an estimate of what is left, on stderr."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from vss_models.build import TrainingProgress
from vss_models.classifier import ClassifierConfig, train_classifier


def test_training_step_lines_become_progress_lines_with_the_epoch_and_an_estimate() -> None:
    out = io.StringIO()
    progress = TrainingProgress(epochs=2, stream=out)

    progress.write("detector epoch 0 step 20/80 loss 3.210 box 1.204 cls 0.800 12s\n")
    progress.write("detector epoch 0 step 40/80 loss 2.")  # a line may arrive in pieces
    progress.write("900 box 1.1 9s\ndetector epoch 1 step 60/80 loss 2.500 box 1.0 30s\nexported\n")

    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"detector: 20/80 \(25%\), \d+s elapsed, ~\d+s left; epoch 1/2, loss 3\.210", lines[0])
    # The next line of the same epoch is too soon; the new epoch's first line is always written.
    assert re.fullmatch(r"detector: 60/80 \(75%\), \d+s elapsed, ~\d+s left; epoch 2/2, loss 2\.500", lines[1])
    assert lines[2:] == ["exported"]


@pytest.mark.slow  # 40 steps of a tiny net: a few seconds alone, far more on a loaded machine
def test_a_real_training_prints_lines_the_progress_reads() -> None:
    config = ClassifierConfig(widths=(4, 8, 8, 8), train_images=40, epochs=2, batch_size=2)
    out = io.StringIO()
    with contextlib.redirect_stdout(TrainingProgress(config.epochs, stream=out)):
        train_classifier(config, log=True)

    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("classifier: ") for line in lines), lines
    assert "epoch 1/2" in lines[0] and "epoch 2/2" in lines[-1]
