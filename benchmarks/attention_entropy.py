"""How selective a trained model's attention is, layer by layer (README, "Small images").

    python benchmarks/attention_entropy.py runs/main_job/seeds/seed_0/model.keras [...]

For every `LocalSelfAttention2D` of each saved model, on the first 256 of scikit-learn's
digits (pixels scaled to 0..1 as the pipeline does): the entropy of each pixel's attention
weights as a share of the largest possible (log of the number of positions its window
reaches: 1.0 is a uniform average, 0.0 one position), and the mean largest weight
(1 / positions for a uniform average: 0.11 for a full 3 x 3 window, 0.25 on a 2 x 2 map).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_sasa

images = load_digits().images[:256].astype("float32")[..., None] / 16.0
for path in sys.argv[1:]:
    model = keras.models.load_model(path)
    layers = [x for x in model.layers if isinstance(x, keras_sasa.LocalSelfAttention2D)]
    inputs = keras.Model(model.inputs, [layer.input for layer in layers]).predict(images, verbose=0)
    print(f"{path}\n| layer | map | entropy / max | largest weight | uniform's largest |")
    print("|---|---|---|---|---|")
    for layer, x in zip(layers, inputs, strict=True):
        _, scores = layer(x, return_attention_scores=True)
        n, h, w, heads, k, _ = scores.shape
        p = np.asarray(scores).reshape(n, h, w, heads, k * k)
        reached = (p > 0).sum(-1)
        entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(-1)
        share = entropy / np.log(np.maximum(reached, 2))
        print(
            f"| {layer.name} | {h}x{w} | {share.mean():.2f} | {p.max(-1).mean():.2f} | "
            f"{(1.0 / reached).mean():.2f} |"
        )
