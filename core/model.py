"""The c-ResUnet model (docs/METHOD.md section 4) and its weighted binary cross-entropy loss.

Written against Keras 3 only (``keras.layers`` and ``keras.ops``), so it runs under the TensorFlow,
JAX and PyTorch backends. ``keras`` is imported inside the functions: importing ``core`` must stay
fast for pages that never show a model.

Shape of the network with ``base_filters = b`` (paper Fig. 5)::

    rgb (H, W, 3) -> 1x1 conv to 1 channel (learned colour space)
    level 1  (b):  preact 3x3, preact 3x3           -> s1, maxpool
    level 2  (2b): residual (1x1 projection)        -> s2, maxpool
    level 3  (4b): residual (1x1 projection)        -> s3, maxpool
    bottleneck (8b): residual 5x5 (projection) + residual 5x5 (identity)
    decoder x3: convT 2x2/2 to half width (u), concat [u, skip], preact 3x3 x2, + u
    head: 1x1 conv to 1 channel, sigmoid (float32 even under mixed precision)

H and W must be multiples of 8 (three poolings); ``core.predict`` pads and crops for you.
"""
from __future__ import annotations

__all__ = ["build_cresunet", "weighted_bce", "PARAMS_AT_16"]

#: Trainable parameters of ``build_cresunet(16)`` (docs/METHOD.md section 4); the paper's model.
PARAMS_AT_16 = 1_707_287


def _preact_conv(x, filters: int, kernel: int, name: str):
    """BatchNorm -> ELU -> Conv('same'): the pre-activation unit every block is made of."""
    from keras import layers

    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.Activation("elu", name=f"{name}_elu")(x)
    return layers.Conv2D(filters, kernel, padding="same", kernel_initializer="he_normal",
                         name=f"{name}_conv")(x)


def _residual_block(x, filters: int, kernel: int, name: str, *, project: bool):
    """Two pre-activation convs plus a shortcut (1x1 projection when widths differ)."""
    from keras import layers

    if project:
        shortcut = layers.Conv2D(filters, 1, padding="same", kernel_initializer="he_normal",
                                 name=f"{name}_proj")(x)
    else:
        shortcut = x
    y = _preact_conv(x, filters, kernel, f"{name}_a")
    y = _preact_conv(y, filters, kernel, f"{name}_b")
    return layers.Add(name=f"{name}_add")([shortcut, y])


def _decoder_block(x, skip, filters: int, name: str):
    """Upsample to ``filters`` channels (u), concat the skip, two preact convs, then add u back."""
    from keras import layers

    u = layers.Conv2DTranspose(filters, 2, strides=2, padding="same",
                               kernel_initializer="he_normal", name=f"{name}_up")(x)
    y = layers.Concatenate(name=f"{name}_cat")([u, skip])
    y = _preact_conv(y, filters, 3, f"{name}_a")
    y = _preact_conv(y, filters, 3, f"{name}_b")
    return layers.Add(name=f"{name}_add")([u, y])


def build_cresunet(base_filters: int = 16):
    """Build an untrained c-ResUnet (docs/METHOD.md section 4).

    Parameters
    ----------
    base_filters : int
        Width of level 1; levels 2, 3 and the bottleneck use 2x, 4x and 8x. The paper's model is 16
        (exactly 1,707,287 trainable parameters); tests use 2.

    Returns
    -------
    keras.Model
        Input ``(None, None, 3)`` float32 RGB in [0, 1]; output ``(None, None, 1)`` float32
        probabilities. Spatial sides must be multiples of 8; use ``core.predict.predict_heatmap``
        for arbitrary images.

    Examples
    --------
    >>> model = build_cresunet(base_filters=2)
    >>> model.output_shape
    (None, None, None, 1)
    """
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ValueError(f"base_filters must be a positive integer, got {base_filters!r}")
    import keras
    from keras import layers

    b = base_filters
    rgb = keras.Input(shape=(None, None, 3), dtype="float32", name="rgb")
    colour = layers.Conv2D(1, 1, kernel_initializer="he_normal", name="colour_space")(rgb)
    # Level 1 is plain (not residual): its input is the single learned-colour channel.
    s1 = _preact_conv(colour, b, 3, "enc1_a")
    s1 = _preact_conv(s1, b, 3, "enc1_b")
    x = layers.MaxPooling2D(2, name="enc1_pool")(s1)
    s2 = _residual_block(x, 2 * b, 3, "enc2", project=True)
    x = layers.MaxPooling2D(2, name="enc2_pool")(s2)
    s3 = _residual_block(x, 4 * b, 3, "enc3", project=True)
    x = layers.MaxPooling2D(2, name="enc3_pool")(s3)
    x = _residual_block(x, 8 * b, 5, "bottleneck", project=True)
    x = _residual_block(x, 8 * b, 5, "bottleneck_extra", project=False)
    x = _decoder_block(x, s3, 4 * b, "dec3")
    x = _decoder_block(x, s2, 2 * b, "dec2")
    x = _decoder_block(x, s1, b, "dec1")
    logits = layers.Conv2D(1, 1, kernel_initializer="he_normal", name="head")(x)
    # float32 output even under a mixed_float16 policy: the loss and thresholds need it.
    prob = layers.Activation("sigmoid", dtype="float32", name="heatmap")(logits)
    return keras.Model(rgb, prob, name=f"c_resunet_{b}")


def weighted_bce(y_true, y_pred):
    """Binary cross-entropy per pixel times the weight map, averaged over all pixels.

    The class weights already live in the weight map (``core.weights.weight_map``), so the loss
    multiplies by the map and by nothing else (docs/METHOD.md section 3).

    Parameters
    ----------
    y_true : tensor (..., H, W, 2)
        Channel 0 is the 0/1 target mask, channel 1 the float32 weight map.
    y_pred : tensor (..., H, W, 1)
        Predicted probabilities. Clipped to ``[eps, 1 - eps]`` so log never sees 0.

    Returns
    -------
    scalar tensor
        ``mean(w * -(m log p + (1 - m) log(1 - p)))`` in float32.

    Examples
    --------
    >>> import numpy as np
    >>> y_true = np.array([[[[1.0, 2.0], [0.0, 1.0]]]], dtype="float32")   # (1, 1, 2, 2)
    >>> y_pred = np.array([[[[0.5], [0.5]]]], dtype="float32")             # (1, 1, 2, 1)
    >>> round(float(weighted_bce(y_true, y_pred)), 4)  # (2 + 1) * ln 2 / 2
    1.0397
    """
    import keras
    from keras import ops

    eps = keras.config.epsilon()
    y_true = ops.cast(y_true, "float32")
    mask = y_true[..., 0]
    weight = y_true[..., 1]
    # Mixed precision gives float16 probabilities; compute the logs in float32.
    p = ops.clip(ops.cast(y_pred, "float32")[..., 0], eps, 1.0 - eps)
    bce = -(mask * ops.log(p) + (1.0 - mask) * ops.log(1.0 - p))
    return ops.mean(bce * weight)
