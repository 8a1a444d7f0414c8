import numpy as np
import pytest
from types import SimpleNamespace

import cv2

from deepseqslam_ros.image_conversion import (CvBridge, ImageError, compressed_to_rgb, image_to_rgb,
                                              rgb_to_image_fields)

RGB = np.random.default_rng(1).integers(0, 255, (6, 8, 3), dtype=np.uint8)


def msg(**fields):
    return SimpleNamespace(**fields)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_colour_encodings_round_trip(encoding):
    assert np.array_equal(image_to_rgb(msg(**rgb_to_image_fields(RGB, encoding))), RGB)


def test_mono_and_16_bit_and_padding():
    grey = image_to_rgb(msg(**rgb_to_image_fields(RGB, 'mono8')))
    assert grey.shape == (6, 8, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    mono16 = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000
    out = image_to_rgb(msg(height=6, width=8, encoding='mono16', is_bigendian=0, step=16, data=mono16.tobytes()))
    assert np.array_equal(out[..., 1], (mono16 >> 8).astype(np.uint8))
    big = image_to_rgb(msg(height=6, width=8, encoding='mono16', is_bigendian=1, step=16,
                           data=mono16.astype('>u2').tobytes()))
    assert np.array_equal(big, out)
    padded = np.zeros((6, 32), np.uint8)                         # step 32 > 24 bytes of rgb8 pixels
    padded[:, :24] = RGB.reshape(6, 24)
    assert np.array_equal(image_to_rgb(msg(height=6, width=8, encoding='rgb8', is_bigendian=0, step=32,
                                           data=padded.tobytes())), RGB)


def test_yuv422_matches_opencv():
    uyvy = np.random.default_rng(2).integers(0, 255, (6, 8, 2), dtype=np.uint8)
    out = image_to_rgb(msg(height=6, width=8, encoding='yuv422', is_bigendian=0, step=16, data=uyvy.tobytes()))
    assert np.array_equal(out, cv2.cvtColor(uyvy, cv2.COLOR_YUV2RGB_UYVY))


@pytest.mark.parametrize('fields,kind', [
    (dict(encoding='32FC1', step=32), 'depth'), (dict(encoding='16UC1', step=16), 'depth'),
    (dict(encoding='weird9'), 'encoding'), (dict(step=5), 'size'),
    (dict(data=b'\0' * 10), 'size'), (dict(height=0, width=0, step=0, data=b''), 'size')])
def test_bad_images_raise_a_counted_kind(fields, kind):
    with pytest.raises(ImageError) as err:
        image_to_rgb(msg(**dict(rgb_to_image_fields(RGB), **fields)))
    assert err.value.kind == kind


def test_compressed():
    ok, jpeg = cv2.imencode('.png', cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert np.array_equal(compressed_to_rgb(msg(format='png', data=jpeg.tobytes())), RGB)
    with pytest.raises(ImageError) as err:
        compressed_to_rgb(msg(format='jpeg', data=b'not a jpeg'))
    assert err.value.kind == 'decode'


@pytest.mark.skipif(CvBridge is None, reason='ROS 2 cv_bridge is not installable here (PyPI has only ROS 1)')
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'])
def test_cv_bridge_and_numpy_paths_agree(encoding):
    from sensor_msgs.msg import Image
    fields = rgb_to_image_fields(RGB, encoding)
    ros = Image(**{k: v for k, v in fields.items() if k != 'data'})
    ros.data = fields['data']
    assert np.array_equal(image_to_rgb(ros, CvBridge()), image_to_rgb(ros))
