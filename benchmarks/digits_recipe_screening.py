"""Recipe and layer screening on digits' held-out split (README, "Small images, and the main job").

    python benchmarks/digits_recipe_screening.py NAME '{"config": {...}, ...}'

trains `TrainConfig(validation_split=0.2, **config)` with `train` (one seed; the val_*
columns are the held-out 20% of the training split) and appends one line to
benchmarks/results/digits_screening/recipe.jsonl: held-out, test and final training
accuracy, images/s, wall seconds, and the held-out and training accuracy at each sixth of
the run. Besides "config": "zero_gamma" (zero-initialised last batch norm of each block),
"optimizer" ({"name": "adamw"}: keras.optimizers.AdamW with the config's learning rate and
weight decay), "layer" (LocalSelfAttention2D arguments; "embedding_stddev" sets the
relative tables' initial standard deviation), "strides" (the groups' strides,
`TrainConfig(stage_strides=...)`; every row records them: the rows written before the
small-image default became (1, 1, 2, 2) ran with (1, 2, 2, 2)), "tiny_window" ([n, k]: window k on feature maps of
at most n pixels a side), "global_clipnorm" (SGD's gradient clipping by global norm),
"head_size" (heads = filters / head_size in each attention layer), "stem_kernel" (K: the
conv_small stem's convolution is K x K; the paper's conv stem is 7 x 7), "affine"
([degrees, zoom]: training images are also rotated by up to that many degrees and scaled
by 1 +- zoom about their centre), "body_stem_layer" ({"num_mixtures": m, ...}: every
attention layer of the body is `AttentionStem2D(window="sliding")`, the stem's layer with
spatially-aware values, with these arguments).
Diagnostics of the attention layer: "attention_logits": "uniform" (the query is zeroed, so
every window is averaged with equal weights: attention that learns nothing) or "identity"
(the layer returns its value projection: no spatial mixing at all); "logit_lr": [a, "qkr"]
(the query, key and/or relative tables are computed as a times a weight initialised at
1/a of its value: the same initial function, a**2 times those weights' learning rate).
The runs of 2026-11-30 ran on 2 CPU cores, most of them shared
with other jobs.
"""
import json, os, sys, time, csv
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
name, spec = sys.argv[1], json.loads(sys.argv[2])
import keras
from keras_sasa import training
from keras_sasa.training import recipe
import keras_sasa.models.resnet as resnet

if spec.get("zero_gamma"):
    orig_bn = resnet._batch_norm
    def _bn(n):
        if n.endswith("_3_bn"):
            return keras.layers.BatchNormalization(epsilon=resnet._BN_EPSILON, gamma_initializer="zeros", name=n)
        return orig_bn(n)
    resnet._batch_norm = _bn
opt = spec.get("optimizer")
if opt:
    def make_optimizer(learning_rate, momentum=0.9, weight_decay=0.0, ema_momentum=None):
        use_ema = ema_momentum is not None
        o = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay,
                                   beta_2=opt.get("beta_2", 0.999),
                                   use_ema=use_ema, ema_momentum=ema_momentum if use_ema else 0.99)
        o.exclude_from_weight_decay(var_names=list(recipe.NO_WEIGHT_DECAY))
        return o
    recipe.make_optimizer = make_optimizer
if spec.get("global_clipnorm"):
    sgd = recipe.make_optimizer
    def make_clipped(*args, **kwargs):
        optimizer = sgd(*args, **kwargs)
        optimizer.global_clipnorm = spec["global_clipnorm"]
        return optimizer
    recipe.make_optimizer = make_clipped
layer_over = spec.get("layer", {})
if layer_over:
    import functools
    kw = dict(layer_over)
    if "embedding_stddev" in kw:
        kw["embedding_initializer"] = keras.initializers.TruncatedNormal(stddev=kw.pop("embedding_stddev"))
    resnet.LocalSelfAttention2D = functools.partial(resnet.LocalSelfAttention2D, **kw)
if spec.get("body_stem_layer"):
    # Every attention layer of the body is the stem's layer, AttentionStem2D with a
    # sliding window: spatially-aware values (position enters through the values, not
    # the logits), with these extra arguments (num_mixtures, scale_logits).
    from keras_sasa.layers import AttentionStem2D
    stem_kw = dict(spec["body_stem_layer"])
    def _stem_layer(filters, kernel_size, num_heads, strides=1, name=None, **_):
        return AttentionStem2D(filters, kernel_size=kernel_size, num_heads=num_heads,
                               strides=strides, window="sliding", name=name, **stem_kw)
    resnet.LocalSelfAttention2D = _stem_layer
if spec.get("head_size"):
    # Heads = filters / head_size in every attention layer (at least 1).
    base_layer = resnet.LocalSelfAttention2D
    def _fixed_head_size(filters, **kwargs):
        kwargs["num_heads"] = max(1, filters // spec["head_size"])
        return base_layer(filters, **kwargs)
    resnet.LocalSelfAttention2D = _fixed_head_size
if spec.get("stem_kernel"):
    orig_stem = resnet._stem
    def _stem(x, stem, width):
        if stem != "conv_small":
            return orig_stem(x, stem, width)
        x = keras.layers.Conv2D(
            width, spec["stem_kernel"], padding="same", use_bias=False, name="conv1_conv"
        )(x)
        x = resnet._batch_norm("conv1_bn")(x)
        return keras.layers.Activation("relu", name="conv1_relu")(x)
    resnet._stem = _stem
if spec.get("attention_logits") or spec.get("logit_lr"):
    import types
    import keras_sasa.layers.local_attention as la
    mode = spec.get("attention_logits")
    alpha, scaled = spec.get("logit_lr", [1.0, ""])
    layer_class = la.LocalSelfAttention2D
    orig_build = layer_class.build
    def build(self, input_shape):
        orig_build(self, input_shape)
        if "q" in scaled:
            self.query_kernel.assign(self.query_kernel / alpha)
        if "k" in scaled:
            self.key_kernel.assign(self.key_kernel / alpha)
        if "r" in scaled and self.use_relative_position:
            self.row_embeddings.assign(self.row_embeddings / alpha)
            self.column_embeddings.assign(self.column_embeddings / alpha)
    layer_class.build = build
    orig_attention = la.attention_ops.local_attention
    def local_attention(query, key, value, row, column, **kwargs):
        if mode == "identity":
            return value
        if mode == "uniform":
            query = query * 0.0
        if "q" in scaled:
            query = query * alpha
        if "k" in scaled:
            key = key * alpha
        if "r" in scaled and row is not None:
            row, column = row * alpha, column * alpha
        return orig_attention(query, key, value, row, column, **kwargs)
    la.attention_ops = types.SimpleNamespace(
        **{**vars(la.attention_ops), "local_attention": local_attention}
    )
if spec.get("tiny_window"):
    # Feature maps of at most tiny_window[0] pixels a side get a window of tiny_window[1].
    orig_window = resnet._window_size
    def _window(x, kernel_size, border, **rest):
        sides = [n for n in x.shape[1:3] if n is not None]
        if sides and max(sides) <= spec["tiny_window"][0]:
            return spec["tiny_window"][1]
        return orig_window(x, kernel_size, border, **rest)
    resnet._window_size = _window
if spec.get("affine"):
    # Training images are also rotated by up to affine[0] degrees and scaled by up to
    # 1 +- affine[1] about their centre (bilinear), before the pad-and-crop shift.
    import math
    import tensorflow as tf
    from keras_sasa.data import pipeline
    degrees, zoom = spec["affine"]
    orig_view = pipeline._small_image_view
    def _affine_view(image_size, *, training, flip):
        view = orig_view(image_size, training=training, flip=flip)
        if not training:
            return view
        def affine(image, seed_pair):
            angle_seed, scale_seed, rest = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 3))
            angle = tf.random.stateless_uniform([], angle_seed, -degrees, degrees) * (math.pi / 180)
            scale = tf.random.stateless_uniform([], scale_seed, 1 - zoom, 1 + zoom)
            h, w = float(image.shape[0]), float(image.shape[1])
            cy, cx = (h - 1) / 2, (w - 1) / 2
            c, s = tf.cos(angle) / scale, tf.sin(angle) / scale
            # Output pixel (x, y) reads input (c(x-cx) - s(y-cy) + cx, s(x-cx) + c(y-cy) + cy).
            transform = tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0])
            out = tf.raw_ops.ImageProjectiveTransformV3(
                images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
                fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
            return view(out, rest)
        return affine
    pipeline._small_image_view = _affine_view
cfg = dict(spec.get("config", {}))
if cfg.get("attention_stages") is not None: cfg["attention_stages"] = tuple(cfg["attention_stages"])
cfg.setdefault("validation_split", 0.2)
if spec.get("strides"):
    cfg["stage_strides"] = tuple(spec["strides"])
config = training.TrainConfig(output_dir=f"runs/digits_recipe_screening/{name}", verbose=0, **cfg)
t = time.time()
res = training.train(config, log=lambda m: None)
wall = time.time() - t
rows = list(csv.DictReader(open(f"runs/digits_recipe_screening/{name}/history.csv")))
q = max(1, len(rows)//6)
out = dict(name=name, val=round(float(rows[-1]["val_accuracy"])*100, 2), test=round(res["test_accuracy"]*100, 2),
           train=round(float(rows[-1]["accuracy"])*100, 2), ips=round(res["train_images_per_second"]),
           params=res["params"], wall=round(wall),
           val_curve=[round(float(r["val_accuracy"])*100,1) for r in rows[q-1::q]],
           tr_curve=[round(float(r["accuracy"])*100,1) for r in rows[q-1::q]], spec=spec)
print(json.dumps(out)); open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "digits_screening", "recipe.jsonl"), "a").write(json.dumps(out) + "\n")
