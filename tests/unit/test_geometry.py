"""Box conventions: the one conversion each way, on non-square images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.images import rgb_with_rectangle
from vesl.vision.geometry import (
    box_iou,
    content_size,
    detector_to_stored,
    letterbox,
    nms,
    pixels_to_stored,
    stored_to_detector,
    stored_to_pixels,
)

sizes = st.integers(min_value=1, max_value=3000)


@settings(max_examples=200, deadline=None)
@given(sizes, sizes, st.sampled_from([64, 448, 960, 1008]))
def test_content_size_keeps_aspect_and_fills_the_long_side(w, h, size):
    cw, ch = content_size(w, h, size)
    assert max(cw, ch) == size or (w == h and cw == ch == size)
    assert 1 <= cw <= size and 1 <= ch <= size
    assert abs(cw / ch - w / h) <= (w / h) * (1 / min(cw, ch)) + 1e-9 or min(cw, ch) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0, 0.9),
    st.floats(0, 0.9),
    st.floats(0.01, 0.1),
    st.floats(0.01, 0.1),
    st.floats(0.05, 1.0),
    st.floats(0.05, 1.0),
)
def test_stored_detector_round_trip(x0, y0, dw, dh, fx, fy):
    box = np.array([[x0, y0, min(1.0, x0 + dw), min(1.0, y0 + dh)]])
    back = detector_to_stored(stored_to_detector(box, (fx, fy)), (fx, fy))
    np.testing.assert_allclose(back, box, atol=1e-5)


@settings(max_examples=100, deadline=None)
@given(sizes, sizes, st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0.5, 1), st.floats(0.5, 1))
def test_stored_pixels_round_trip(w, h, x0, y0, x1, y1):
    box = np.array([[x0, y0, x1, y1]], np.float32)
    np.testing.assert_allclose(pixels_to_stored(stored_to_pixels(box, w, h), w, h), box, atol=1e-6)


def test_detector_boxes_are_clipped_to_the_image():
    # A box reaching into the padding (below a wide image) is clipped to the image's bottom edge.
    stored = detector_to_stored(np.array([[0.5, 0.45, 0.2, 0.5]]), (1.0, 0.5))
    np.testing.assert_allclose(stored, [[0.4, 0.4, 0.6, 1.0]], atol=1e-6)


def test_letterbox_puts_the_image_top_left_and_rectangles_land_on_their_pixels():
    width, height, size = 300, 120, 96
    rect = (60, 30, 150, 90)
    pixels, cw, ch = letterbox(rgb_with_rectangle(width, height, rect), size)
    assert pixels.shape == (size, size, 3) and (cw, ch) == content_size(width, height, size) == (96, 38)
    assert not pixels[ch:].any() and not pixels[:, cw:].any()  # padding left for the detector to fill
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60)
    ys, xs = np.nonzero(red)
    # The red area seen by the detector, as a normalized cxcywh box of the square input...
    det = np.array(
        [
            [
                (xs.min() + xs.max() + 1) / 2 / size,
                (ys.min() + ys.max() + 1) / 2 / size,
                (xs.max() + 1 - xs.min()) / size,
                (ys.max() + 1 - ys.min()) / size,
            ]
        ]
    )
    # ... converted back lands on the rectangle's pixels in the original (within resampling blur).
    px = stored_to_pixels(detector_to_stored(det, (cw / size, ch / size)), width, height)[0]
    np.testing.assert_allclose(px, rect, atol=width / size * 1.5)


def test_iou_and_nms():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 0.9, 1], [0.5, 0.5, 0.6, 0.6], [0, 0, 0, 0]])
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(0.9)
    assert box_iou(boxes[3:], boxes[3:])[0, 0] == 0.0
    kept = nms(boxes[:3], np.array([0.5, 0.9, 0.3]), iou_threshold=0.5)
    assert kept.tolist() == [1, 2]
    assert nms(boxes[:3], np.array([0.5, 0.9, 0.3]), iou_threshold=0.95).tolist() == [1, 0, 2]


def iou_by_hand(a, b) -> float:
    """One pair, the textbook way, in Python floats (float64)."""
    ax0, ay0, ax1, ay1 = map(float, a)
    bx0, by0, bx1, by1 = map(float, b)
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0) + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    return inter / union if union > 0 else 0.0


box_strategy = st.tuples(*[st.floats(0, 1, width=32)] * 4)


@settings(max_examples=200, deadline=None)
@given(st.lists(box_strategy, min_size=1, max_size=5), st.lists(box_strategy, min_size=1, max_size=4))
def test_box_iou_equals_the_textbook_formula_pair_by_pair(a, b):
    a32, b32 = np.array(a, np.float32), np.array(b, np.float32)  # float32 in, as detections are
    got = box_iou(a32, b32)
    assert got.shape == (len(a), len(b)) and got.dtype == np.float64
    for i, j in np.ndindex(got.shape):
        assert got[i, j] == iou_by_hand(a32[i], b32[j])  # computed in float64, exactly


def nms_by_hand(boxes, scores, threshold) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # ties: the earlier box first
    kept: list[int] = []
    for i in order:
        if all(iou_by_hand(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(box_strategy, st.sampled_from([0.25, 0.5, 0.75, 0.9])), min_size=1, max_size=20),
    st.sampled_from([0.0, 0.3, 0.5, 0.7]),
)
def test_nms_equals_greedy_by_hand_ties_included(entries, threshold):
    boxes = np.array([e[0] for e in entries], np.float32)
    scores = np.array([e[1] for e in entries], np.float32)
    assert nms(boxes, scores, threshold).tolist() == nms_by_hand(boxes, scores, threshold)
