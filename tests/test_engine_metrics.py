"""Metrics against values computed by hand."""
import warnings

import numpy as np
import pytest

from engine.metrics import ccc, classification_metrics, pcc, regression_metrics
from engine.reports import clip_average, merge_views, predictions_frame


def test_classification_metrics_by_hand():
    # 4 classes; class 3 never appears in the targets, class 2 is never predicted.
    targets = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
    preds = [0, 0, 1, 1, 1, 0, 1, 3, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prediction of the absent class 3 is expected, not warned about
        m = classification_metrics(targets, preds, 4)
    # recalls: class0 3/4, class1 2/2, class2 0/4 -> UAR over the present classes = (.75 + 1 + 0) / 3
    assert m["uar"] == pytest.approx(100 * 1.75 / 3)
    assert m["war"] == pytest.approx(50.0)
    # F1: c0 p=3/5 r=3/4 -> 2/3; c1 p=2/4 r=1 -> 2/3; c2 0; supports 4, 2, 4
    assert m["weighted_f1"] == pytest.approx(100 * (2 / 3 * 4 + 2 / 3 * 2) / 10)
    assert m["macro_f1"] == pytest.approx(100 * (4 / 3) / 3)
    assert m["micro_f1"] == pytest.approx(50.0)
    assert m["per_class_acc"] == {"0": 75.0, "1": 100.0, "2": 0.0}
    assert np.asarray(m["confusion_matrix"]).shape == (4, 4)
    assert m["confusion_matrix"][2] == [2, 1, 0, 1]


def test_pcc_ccc_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 4.0, 6.0, 8.0])
    assert pcc(x, y) == pytest.approx(1.0)
    # ccc = 2 cov / (var x + var y + (mx - my)^2), population moments
    cov = np.mean((x - 2.5) * (y - 5.0))
    assert ccc(x, y) == pytest.approx(2 * cov / (x.var() + y.var() + 2.5 ** 2))
    assert ccc(x, x) == pytest.approx(1.0)
    assert pcc(x, np.ones(4)) == 0.0


def test_regression_metrics_acc_is_one_minus_mae():
    t = np.array([[0.5, 0.2], [0.7, 0.4], [0.1, 0.9]])
    p = np.array([[0.6, 0.2], [0.5, 0.5], [0.1, 0.6]])
    m = regression_metrics(t, p, ["a", "b"])
    assert m["acc_per_target"]["a"] == pytest.approx(1 - (0.1 + 0.2 + 0.0) / 3)
    assert m["acc_per_target"]["b"] == pytest.approx(1 - (0.0 + 0.1 + 0.3) / 3)
    assert m["acc"] == pytest.approx((m["acc_per_target"]["a"] + m["acc_per_target"]["b"]) / 2)
    assert m["ccc"] == pytest.approx((ccc(p[:, 0], t[:, 0]) + ccc(p[:, 1], t[:, 1])) / 2)


def test_view_merging_drops_padding_duplicates_and_averages_probabilities():
    logits_a = np.array([2.0, 0.0])
    logits_b = np.array([0.0, 1.0])
    records = [(0, 0, logits_a, 0), (0, 1, logits_b, 0), (1, 0, logits_b, 1),
               (0, 0, logits_a, 0)]  # the last is a DistributedSampler pad duplicate
    videos, scores, targets = merge_views(records, "classification")
    soft = lambda v: np.exp(v) / np.exp(v).sum()  # noqa: E731
    assert videos == [0, 1] and targets == [0, 1]
    np.testing.assert_allclose(scores[0], (soft(logits_a) + soft(logits_b)) / 2)


def test_clip_average_groups_clips_into_videos():
    names = ["a", "b"]
    frame = predictions_frame(["s1/v1/c1.mp4", "s1/v1/c2.mp4", "s2/v9/c1.mp4"],
                              np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]), [0, 0, 1], "classification", names)
    videos = clip_average(frame, r"^(.*)/[^/]+$", names)
    assert list(videos["id"]) == ["s1/v1", "s2/v9"]
    np.testing.assert_allclose(videos["score_a"], [0.55, 0.3])
    assert list(videos["prediction"]) == [0, 1] and list(videos["target"]) == [0, 1]


def test_non_finite_metrics_are_written_as_null_with_the_reason(tmp_path):
    import json
    import math

    import pandas as pd

    from engine.reports import metrics_from_frame, write_reports
    frame = pd.DataFrame({"id": ["a", "b", "c"], "target_x": [0.1, 0.5, 0.9], "pred_x": [0.2, float("nan"), 0.4]})
    metrics = metrics_from_frame(frame, "regression", ["x"])
    assert math.isnan(metrics["mse"])
    write_reports(str(tmp_path), frame, metrics, "regression", ["x"])
    def strict(constant):
        raise AssertionError(f"metrics.json holds {constant}")
    written = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=strict)
    assert written["mse"] is None and written["ccc"] is None and "NaN" in written["non_finite"]["mse"]


def test_confusion_plot_shows_row_percentages_and_a_colour_bar():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.reports import confusion_figure
    counts = [[3, 1, 0], [0, 2, 0], [0, 0, 0]]  # the third class has no test video
    fig = confusion_figure(plt, counts, ["a", "b", "c"], "UAR")
    matrix, bar = fig.axes
    texts = [t.get_text() for t in matrix.texts]
    assert texts == ["75.0", "25.0", "0.0", "0.0", "100.0", "0.0", "0.0", "0.0", "0.0"]
    assert bar.get_ylim() == (0.0, 100.0) and [t.get_text() for t in matrix.get_xticklabels()] == ["a", "b", "c"]
    plt.close(fig)
