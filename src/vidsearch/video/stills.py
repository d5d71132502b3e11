"""Still images as queries: bytes → RGB pixels, decoded by Pillow within size limits and its decompression-bomb guard."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_BYTES = 20 * 2**20
MAX_IMAGE_PIXELS = 40_000_000  # about 7 700 × 5 200: larger images are refused before their pixels are decoded


class ImageRejected(ValueError):
    """A file that is not an image Pillow can decode within the limits; the message says why, in one line."""


def decode_image(data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any format Pillow reads → RGB uint8 [H, W, 3] (the first frame of an animation).

    The declared size is checked before the pixels are decoded: over `max_pixels` the image is refused; Pillow's own
    decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`) stays on, its warning made an error.
    """
    if len(data) > max_bytes:
        raise ImageRejected(f"the image is {len(data)} bytes: the limit is {max_bytes}")
    if not data:
        raise ImageRejected("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                _check_pixels(image.size, max_pixels)
                return np.array(image.convert("RGB"))
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(f"the image is too large to decode: {error}") from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP, TIFF...)") from None
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
        raise ImageRejected(f"the image cannot be decoded: {error}") from None


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageRejected(f"the image is {width}×{height}: it has no pixels")
    if width * height > max_pixels:
        raise ImageRejected(f"the image is {width}×{height} pixels: the limit is {max_pixels} pixels")
