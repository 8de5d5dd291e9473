"""Training-side box conventions: each transform of the training input, on non-square images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.images import rgb_with_rectangle
from vesl.training.patches import patch_masks, patch_region_index
from vesl.training.transforms import MODES, TrainingTransform

sides = st.integers(min_value=8, max_value=2000)


@settings(max_examples=200, deadline=None)
@given(
    sides,
    sides,
    st.sampled_from(MODES),
    st.sampled_from([224, 256, 384]),
    st.floats(0, 0.8),
    st.floats(0, 0.8),
    st.floats(0.05, 0.2),
    st.floats(0.05, 0.2),
)
def test_boxes_round_trip_and_stay_inside(width, height, mode, size, x0, y0, dw, dh):
    transform = TrainingTransform(size, mode)
    stored = np.array([[x0, y0, x0 + dw, y0 + dh]], np.float64)
    if mode == "center_crop":  # a box inside the centre square (the rest is clipped: no round trip)
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        stored = (stored * side + [left, top, left, top]) / [width, height, width, height]
    stored = stored.astype(np.float32)
    px = transform.boxes(stored, width, height)
    assert (px >= 0).all() and (px <= size).all()
    np.testing.assert_allclose(transform.to_stored(px, width, height), stored, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("width", "height", "rect"), [(300, 120, (60, 30, 150, 90)), (90, 240, (10, 150, 70, 230))])
def test_boxes_land_on_the_transformed_pixels(mode, width, height, rect):
    transform = TrainingTransform(96, mode)
    pixels = transform.image(rgb_with_rectangle(width, height, rect))
    assert pixels.shape == (96, 96, 3)
    stored = np.array([[rect[0] / width, rect[1] / height, rect[2] / width, rect[3] / height]])
    x0, y0, x1, y1 = transform.boxes(stored, width, height)[0]
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60)
    ys, xs = np.nonzero(red)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [x0, y0, x1, y1], atol=1.5)


def test_pad_center_matches_tensorflow_resize_with_pad_geometry():
    # tf.image.resize_with_pad(640x427 -> 224): ratio 640/224, resized 224 x floor(427/ratio)=149, pad (224-149)//2=37
    p = TrainingTransform(224, "pad_center").placement(640, 427)
    assert (p.content_width, p.content_height, p.offset_x, p.offset_y) == (224, 149, 0, 37)
    q = TrainingTransform(224, "pad_bottom_right").placement(640, 427)
    assert (q.offset_x, q.offset_y) == (0, 0)


def test_center_crop_is_patch_segs_square():
    # 640 x 427: the square is 427 px from x = (640 - 427) // 2 = 106; a box on that square's left
    # half lands on the input's left half, one outside the square is clipped to its edge
    transform = TrainingTransform(224, "center_crop")
    stored = np.array([[106 / 640, 0, (106 + 213.5) / 640, 1], [0, 0, 100 / 640, 0.5]])
    np.testing.assert_allclose(transform.boxes(stored, 640, 427), [[0, 0, 112, 224], [0, 0, 0, 112]], atol=1e-3)


def test_patch_targets():
    boxes = np.array([[0, 0, 32, 32], [0, 0, 64, 64], [100, 100, 100, 100]], np.float32)  # the last is empty
    masks = patch_masks(boxes, 64, 16)
    assert masks.shape == (3, 4, 4)
    assert masks[0].sum() == 4 and masks[1].sum() == 16 and masks[2].sum() == 0
    index = patch_region_index(boxes, 64, 16)
    assert index[0, 0] == 0 and index[3, 3] == 1  # the smallest containing region wins
    assert (patch_region_index(boxes, 64, 16, valid=np.array([False, True, True])) == 1).all()
    assert (patch_region_index(np.zeros((0, 4)), 64, 16) == -1).all()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patch_masks(boxes, 60, 16)


def test_pad_center_is_tensorflows_resize_with_pad_on_its_own_golden_values():
    """972 (width, height, size) cases measured on tf.image.resize_with_pad's output by TensorFlow
    2.21 itself (tests/fixtures/tensorflow/resize_with_pad.json), e.g. 640x424 at 224: x 0, y 37."""
    import json

    from tests.conftest import FIXTURES

    golden = json.loads((FIXTURES / "tensorflow" / "resize_with_pad.json").read_text())["placements"]
    assert len(golden) == 972
    for width, height, size, ox, oy, cw, ch in golden:
        p = TrainingTransform(size, "pad_center").placement(width, height)
        if ox is None:  # TensorFlow refuses a side that resizes to 0 px; VESL keeps 1 px
            assert min(p.content_width, p.content_height) == 1
            continue
        assert (p.offset_x, p.offset_y, p.content_width, p.content_height) == (ox, oy, cw, ch), (width, height, size)
