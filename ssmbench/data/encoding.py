"""How raw bytes become model input, shared by the tasks that read the same kind of data.

    bytes   token 0 is padding, byte b is token b + BYTE_SHIFT: BYTE_VOCAB = 257 ids (LRA Text, Retrieval)
    images  PNG/JPEG bytes -> (H, W, C) uint8 pixels (sMNIST, sCIFAR, LRA Image, Pathfinder)
"""

from __future__ import annotations

import io

import numpy as np

from ssmbench.data.storage import corrupt_file

BYTE_SHIFT = 1                 # token id of byte b is b + BYTE_SHIFT; 0 is padding
BYTE_VOCAB = 256 + BYTE_SHIFT  # padding + 256 byte values


def decode_image(data: bytes, mode: str, size: tuple[int, int], where: str) -> np.ndarray:
    """PNG/JPEG bytes -> (H, W, C) uint8 in PIL `mode` ("L" or "RGB"); TaskDataError naming `where` if
    the bytes are not an image of `size` = (width, height)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.size != size:
                raise corrupt_file(where, f"image is {img.size[0]}x{img.size[1]}, expected {size[0]}x{size[1]}")
            array = np.asarray(img.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise corrupt_file(where, f"not a readable image ({type(e).__name__}: {e})") from e
    return array.reshape(size[1], size[0], -1)
