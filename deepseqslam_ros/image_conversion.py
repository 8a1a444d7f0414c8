"""ROS image messages -> HxWx3 uint8 RGB arrays, without ROS imports.

Works on any object with the sensor_msgs/Image fields (rclpy or rosbags messages). `cv_bridge` is
used when it imports (a ROS install) and this numpy path otherwise; both give identical arrays.
Bad input raises ImageError with a `kind` the node counts in /diagnostics.
"""
from __future__ import annotations

import cv2
import numpy as np

# encoding -> (channels, dtype, conversion to RGB or None)
ENCODINGS = {
    'rgb8': (3, np.uint8, None),
    'bgr8': (3, np.uint8, cv2.COLOR_BGR2RGB),
    '8UC3': (3, np.uint8, cv2.COLOR_BGR2RGB),
    'rgba8': (4, np.uint8, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, np.uint8, cv2.COLOR_BGRA2RGB),
    '8UC4': (4, np.uint8, cv2.COLOR_BGRA2RGB),
    'mono8': (1, np.uint8, cv2.COLOR_GRAY2RGB),
    '8UC1': (1, np.uint8, cv2.COLOR_GRAY2RGB),
    'mono16': (1, np.uint16, cv2.COLOR_GRAY2RGB),
    'rgb16': (3, np.uint16, None),
    'bgr16': (3, np.uint16, cv2.COLOR_BGR2RGB),
    'uyvy': (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),
    'yuv422': (2, np.uint8, cv2.COLOR_YUV2RGB_UYVY),      # ROS' yuv422 is UYVY byte order
    'yuyv': (2, np.uint8, cv2.COLOR_YUV2RGB_YUYV),
    'yuv422_yuy2': (2, np.uint8, cv2.COLOR_YUV2RGB_YUYV),
    'bayer_rggb8': (1, np.uint8, cv2.COLOR_BayerBG2RGB),   # OpenCV names Bayer by the 2nd row
    'bayer_bggr8': (1, np.uint8, cv2.COLOR_BayerRG2RGB),
    'bayer_gbrg8': (1, np.uint8, cv2.COLOR_BayerGR2RGB),
    'bayer_grbg8': (1, np.uint8, cv2.COLOR_BayerGB2RGB),
}
DEPTH_ENCODINGS = {'16UC1', '32FC1', '16SC1', '32SC1', '64FC1'}


try:  # ROS 2 cv_bridge, when this is a ROS install
    from cv_bridge import CvBridge
except ImportError:
    CvBridge = None


class ImageError(ValueError):
    """An image that cannot be used; `kind` names the counter it goes to."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def image_to_rgb(msg, bridge=None) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (16-bit images scaled to 8 bits).

    With a `bridge` (a cv_bridge.CvBridge), 8-bit images are converted by cv_bridge after the same checks.
    """
    encoding = msg.encoding
    if encoding in DEPTH_ENCODINGS:
        raise ImageError('depth', f'encoding {encoding!r} is a depth/float image; place recognition '
                                  'needs a colour or mono camera topic')
    if encoding not in ENCODINGS:
        raise ImageError('encoding', f'unsupported image encoding {encoding!r}; supported: '
                                     f'{", ".join(sorted(ENCODINGS))}')
    channels, dtype, code = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    row = width * channels * itemsize
    if height == 0 or width == 0:
        raise ImageError('size', f'zero-size image {width}x{height}')
    if step < row:
        raise ImageError('size', f'{encoding} image {width}x{height}: step {step} < {row} bytes per row')
    data = msg.data if isinstance(msg.data, (bytes, bytearray, memoryview)) else bytes(msg.data)
    buffer = np.frombuffer(data, np.uint8)
    if buffer.size < height * step:
        raise ImageError('size', f'{encoding} image {width}x{height}: {buffer.size} data bytes, '
                                 f'need height*step = {height * step}')
    if bridge is not None and itemsize == 1:
        return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8'))
    rows = buffer[:height * step].reshape(height, step)[:, :row]
    pixels = rows.view(np.dtype(dtype).newbyteorder('>' if msg.is_bigendian else '<'))
    if channels == 2:   # packed 4:2:2, two bytes per pixel
        image = pixels.reshape(height, width, 2)
    else:
        image = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)
    if itemsize == 2:
        image = (image.astype(np.uint16) >> 8).astype(np.uint8)
    if code is not None:
        image = cv2.cvtColor(np.ascontiguousarray(image), code)
    return np.ascontiguousarray(image)


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ...) -> (H, W, 3) uint8 RGB."""
    buffer = np.frombuffer(bytes(msg.data), np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise ImageError('decode', f'cannot decode compressed image (format {msg.format!r}, {buffer.size} bytes)')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = 'rgb8') -> dict:
    """Fields of a sensor_msgs/Image holding `rgb` in `encoding` (rgb8, bgr8, mono8, rgba8, bgra8)."""
    code = {'rgb8': None, 'bgr8': cv2.COLOR_RGB2BGR, 'mono8': cv2.COLOR_RGB2GRAY,
            'rgba8': cv2.COLOR_RGB2RGBA, 'bgra8': cv2.COLOR_RGB2BGRA}[encoding]
    pixels = rgb if code is None else cv2.cvtColor(rgb, code)
    height, width = pixels.shape[:2]
    return {'height': height, 'width': width, 'encoding': encoding, 'is_bigendian': 0,
            'step': pixels.strides[0], 'data': pixels.tobytes()}
