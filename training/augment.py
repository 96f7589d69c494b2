"""Random augmentation of one training crop: NumPy, SciPy and scikit-image only (docs/METHOD.md 5).

Geometric transforms (multiples of 90 degrees, flips, a small arbitrary rotation, an elastic
deformation after Simard et al. 2003) move the image, the mask and the weight map together: the
arbitrary rotation and the elastic field are merged into one coordinate map that is sampled once
per array, linearly for the image and the weights and nearest-neighbour for the mask, so the mask
stays binary. Photometric changes (brightness, contrast, hue, Gaussian noise, blur) touch the image
only. Everything is drawn from the generator passed in, so a seed gives the same crop every time.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from training.config import AugmentConfig

__all__ = ["augment_crop", "geometric", "photometric"]


def augment_crop(image, mask, weights, rng: np.random.Generator,
                 params: AugmentConfig = AugmentConfig()):
    """Randomly transform a crop; the same geometry is applied to image, mask and weights.

    Parameters
    ----------
    image : float32 array (H, W, 3)
        RGB in [0, 1].
    mask : array (H, W)
        0/1 target (any dtype; returned as float32 0/1).
    weights : float32 array (H, W)
        The crop's weighted map.
    rng : numpy.random.Generator
        Source of every random choice.
    params : AugmentConfig
        Probabilities and magnitudes; ``params.enabled=False`` returns float32 copies unchanged.

    Returns
    -------
    image, mask, weights : float32 arrays of the input shapes
        Image clipped to [0, 1], mask exactly 0 or 1.

    Examples
    --------
    >>> img = np.zeros((32, 32, 3), np.float32); img[4:12, 4:12] = 1.0
    >>> m = img[..., 0] > 0.5; w = np.ones((32, 32), np.float32)
    >>> a, b, c = augment_crop(img, m, w, np.random.default_rng(0))
    >>> a.shape, b.shape, c.shape, sorted(np.unique(b).tolist()) == [0.0, 1.0]
    ((32, 32, 3), (32, 32), (32, 32), True)
    """
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask).astype(np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    if image.shape[:2] != mask.shape or mask.shape != weights.shape:
        raise ValueError(f"image {image.shape}, mask {mask.shape} and weights {weights.shape} "
                         "must share their first two sides")
    if not params.enabled:
        return image.copy(), mask.copy(), weights.copy()
    image, mask, weights = geometric(image, mask, weights, rng, params)
    return photometric(image, rng, params), mask, weights


def geometric(image, mask, weights, rng: np.random.Generator, params: AugmentConfig):
    """The geometric half of :func:`augment_crop` (one transform for all three arrays).

    >>> rng = np.random.default_rng(3)
    >>> m = np.zeros((16, 16), np.float32); m[2:6, 3:9] = 1
    >>> img = np.repeat(m[..., None], 3, axis=2)
    >>> a, b, _ = geometric(img, m, m.copy(), rng, AugmentConfig(rotate_prob=0, elastic_prob=0))
    >>> bool(np.array_equal(a[..., 0], b))   # lossless moves keep image and mask identical
    True
    """
    k = int(rng.integers(4)) if params.rotate90 else 0
    flip_lr = params.flip and rng.random() < 0.5
    flip_ud = params.flip and rng.random() < 0.5
    arrays = [image, mask, weights]
    arrays = [np.rot90(a, k, axes=(0, 1)) for a in arrays]
    if flip_lr:
        arrays = [a[:, ::-1] for a in arrays]
    if flip_ud:
        arrays = [a[::-1] for a in arrays]
    coords = _warp_coordinates(arrays[1].shape, rng, params)
    if coords is None:
        return tuple(np.ascontiguousarray(a) for a in arrays)
    image, mask, weights = arrays
    image = np.stack([_sample(image[..., c], coords, 1) for c in range(image.shape[2])], axis=-1)
    return image, (_sample(mask, coords, 0) > 0.5).astype(np.float32), _sample(weights, coords, 1)


def _warp_coordinates(shape, rng: np.random.Generator, params: AugmentConfig):
    """Source coordinates (2, H, W) of a small rotation and/or elastic field; None for neither."""
    rotate = params.max_angle > 0 and rng.random() < params.rotate_prob
    elastic = params.elastic_alpha > 0 and rng.random() < params.elastic_prob
    # The angle is drawn even when unused, so the rotate switch does not shift later draws.
    angle = np.deg2rad(rng.uniform(-params.max_angle, params.max_angle))
    if not (rotate or elastic):
        return None
    h, w = shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                             indexing="ij")
    if rotate:
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        dy, dx = rows - cy, cols - cx
        cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        rows, cols = cy + cos * dy - sin * dx, cx + sin * dy + cos * dx
    if elastic:
        rows = rows + _displacement(shape, rng, params)
        cols = cols + _displacement(shape, rng, params)
    return np.stack([rows, cols])


def _displacement(shape, rng: np.random.Generator, params: AugmentConfig) -> np.ndarray:
    """One component of Simard's field: uniform noise in [-1, 1], Gaussian-smoothed, scaled.

    The smoothed field's spread shrinks with sigma; it is rescaled to unit maximum so that
    ``elastic_alpha`` reads as the largest displacement in pixels whatever the sigma.
    """
    field = ndi.gaussian_filter(rng.uniform(-1, 1, size=shape).astype(np.float32),
                                params.elastic_sigma, mode="reflect")
    peak = float(np.abs(field).max()) or 1.0
    return field * np.float32(params.elastic_alpha * rng.uniform(0.5, 1.0) / peak)


def _sample(array: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    """Sample ``array`` at ``coords``; reflection fills what moved in from outside the crop."""
    return ndi.map_coordinates(array, coords, order=order, mode="reflect").astype(np.float32)


def photometric(image, rng: np.random.Generator, params: AugmentConfig) -> np.ndarray:
    """Brightness/contrast, hue, Gaussian noise and blur on an RGB float image in [0, 1].

    >>> img = np.full((8, 8, 3), 0.5, np.float32)
    >>> out = photometric(img, np.random.default_rng(0), AugmentConfig())
    >>> out.dtype.name, float(out.min()) >= 0.0, float(out.max()) <= 1.0
    ('float32', True, True)
    """
    out = np.asarray(image, dtype=np.float32)
    gain = np.float32(1.0 + rng.uniform(-params.contrast, params.contrast))
    shift = np.float32(rng.uniform(-params.brightness, params.brightness))
    hue = rng.uniform(-params.hue, params.hue)
    noise = rng.random() < params.noise_prob
    blur = rng.random() < params.blur_prob
    mean = out.mean(axis=(0, 1), keepdims=True)
    out = (out - mean) * gain + mean + shift
    if params.hue > 0:
        out = _shift_hue(np.clip(out, 0.0, 1.0), hue)
    if blur and params.blur_sigma > 0:
        sigma = rng.uniform(0.3, params.blur_sigma)
        out = ndi.gaussian_filter(out, sigma=(sigma, sigma, 0), mode="reflect")
    if noise and params.noise_std > 0:
        std = rng.uniform(0.0, params.noise_std)
        out = out + rng.normal(0.0, std, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _shift_hue(rgb: np.ndarray, shift: float) -> np.ndarray:
    """Rotate hue by ``shift`` turns of the colour wheel.

    A rotation of RGB space about the grey axis (Rodrigues' formula): grey stays grey, saturation
    and brightness are nearly kept, and it costs one 3x3 matrix product instead of an HSV round
    trip (ten times slower on a 512x512 crop).
    """
    theta = 2.0 * np.pi * shift
    k = np.full(3, 1.0 / np.sqrt(3.0))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot = np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(k, k)
    return rgb @ rot.T.astype(np.float32)
