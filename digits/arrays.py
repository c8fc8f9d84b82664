"""The array types the numeric modules share, named once."""

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]  # pixels and probabilities: every array the models and readers compute on
Mask = npt.NDArray[np.bool_]  # ink or not, per pixel
Bytes = npt.NDArray[np.uint8]  # 8-bit images, as MNIST and scans store them
Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), in an image's pixels
