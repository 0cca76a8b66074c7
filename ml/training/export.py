"""Export a trained model for serving without TensorFlow.

LiteRT (the TensorFlow Lite runtime, package `ai-edge-litert`) runs the
convolutional part: image -> (last feature map, lower-backbone feature map). The
head is tiny (pooling, Dense, BatchNormalization, Dense), so its weights go to a
numpy file and ml.serving.runtimes.LiteRTRuntime computes it, and its gradient for
Grad-CAM, in numpy. Weights are stored as float16 (half the size, computed in
float32 by LiteRT); the Keras model stays beside it as the fallback and reference.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ml.artifact import HEAD_FILENAME, LITERT_FILENAME, METADATA_FILENAME, MODEL_FILENAME, image_size_of
from ml.model.layers import load_keras_model


def export_litert(model_dir, log=print) -> dict:
    """Write model.tflite and head.npz beside model.keras and record them in metadata.json."""
    model_dir = Path(model_dir)
    meta_path = model_dir / METADATA_FILENAME
    metadata = json.loads(meta_path.read_text())
    model = load_keras_model(model_dir / MODEL_FILENAME)
    lower, upper, head = (model.get_layer(n) for n in ("lower", "upper", "head"))
    cam_layer = metadata.get("cam_layer", "top_activation")
    feature_model = keras.Model(upper.input, upper.get_layer(cam_layer).output)
    size = image_size_of(metadata)
    image = keras.Input((size, size, 3), batch_size=1, name="image")
    lower_map = lower(image)
    backbone = keras.Model(image, [feature_model(lower_map), lower_map])
    converter = tf.lite.TFLiteConverter.from_keras_model(backbone)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    (model_dir / LITERT_FILENAME).write_bytes(converter.convert())

    dense, bn, out = head.get_layer("head_dense"), head.get_layer("head_bn"), head.get_layer("probabilities")
    gamma, beta, mean, variance = bn.get_weights()
    np.savez(
        model_dir / HEAD_FILENAME,  # the large kernel in float16, like the backbone's weights
        dense_kernel=dense.get_weights()[0].astype(np.float16),
        dense_bias=dense.get_weights()[1],
        bn_gamma=gamma,
        bn_beta=beta,
        bn_mean=mean,
        bn_variance=variance,
        bn_epsilon=np.array(bn.epsilon, dtype=np.float32),
        out_kernel=out.get_weights()[0],
        out_bias=out.get_weights()[1],
    )
    metadata["litert"] = {
        "model": LITERT_FILENAME,
        "head": HEAD_FILENAME,
        "feature_channels": int(feature_model.output.shape[-1]),
        "lower_channels": int(lower.output.shape[-1]),
        "weights": "float16",
    }
    metadata["cam_layer"] = cam_layer
    meta_path.write_text(json.dumps(metadata, indent=2))
    log(f"exported {model_dir / LITERT_FILENAME} ({(model_dir / LITERT_FILENAME).stat().st_size / 1e6:.1f} MB)")
    return metadata["litert"]


def compress_keras_file(path) -> None:
    """Re-pack a .keras file with deflate (Keras writes it stored): about 10% smaller,
    and Keras reads it the same way."""
    path = Path(path)
    tmp = path.with_suffix(".keras.tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
    tmp.replace(path)
