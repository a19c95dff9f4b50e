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
`SASAResNet(stackwise_strides=...)`), "tiny_window" ([n, k]: window k on feature maps of
at most n pixels a side), "global_clipnorm" (SGD's gradient clipping by global norm). The runs of 2026-11-30 ran on 2 CPU cores, most of them shared
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
if spec.get("strides"):
    import functools
    resnet.SASAResNet = functools.partial(resnet.SASAResNet, stackwise_strides=tuple(spec["strides"]))
if spec.get("tiny_window"):
    # Feature maps of at most tiny_window[0] pixels a side get a window of tiny_window[1].
    orig_window = resnet._window_size
    def _window(x, kernel_size, border, **rest):
        sides = [n for n in x.shape[1:3] if n is not None]
        if sides and max(sides) <= spec["tiny_window"][0]:
            return spec["tiny_window"][1]
        return orig_window(x, kernel_size, border, **rest)
    resnet._window_size = _window
cfg = dict(spec.get("config", {}))
if cfg.get("attention_stages") is not None: cfg["attention_stages"] = tuple(cfg["attention_stages"])
cfg.setdefault("validation_split", 0.2)
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
