"""Screening runs on digits before the search (README, "Small images, and the main job").

    python benchmarks/digits_screening.py NAME '{"config": {...}, "model": {...}}'

trains `TrainConfig(**config)` with `train` (test split, one seed) and appends one line
to benchmarks/results/digits_screening/results.jsonl: test and final training accuracy,
images/s, parameters, MFLOPs, wall seconds and the validation accuracy at each quarter.
"model" changes the builder: "strides" (stackwise_strides), "scale_logits" (False: the
paper's unscaled logits) and "zero_gamma" (zero-initialised last batch norm per block).
The runs of 2026-11-30 ran on 2 CPU cores shared with other jobs, before SASAResNet
cut windows to the feature map (their parameter counts differ a little from today's).
"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
name, spec = sys.argv[1], json.loads(sys.argv[2])
from keras_sasa import training
from keras_sasa.training import run as run_mod
from keras_sasa.models import MODELS
from keras_sasa.training import recipe
import keras_sasa.models.resnet as resnet

model_over = dict(spec.get("model", {}))
import functools
if "scale_logits" in model_over:
    resnet.LocalSelfAttention2D = functools.partial(resnet.LocalSelfAttention2D, scale_logits=model_over.pop("scale_logits"))
if model_over.pop("zero_gamma", False):
    import keras
    orig_bn = resnet._batch_norm
    def _bn(name):
        if name.endswith("_3_bn"):
            return keras.layers.BatchNormalization(epsilon=resnet._BN_EPSILON, gamma_initializer="zeros", name=name)
        return orig_bn(name)
    resnet._batch_norm = _bn
orig_build = run_mod.build_model
def build_model(config, info):
    over = dict(model_over)
    if not config.attention_stages and "baseline_stem" in over:
        pass
    over.pop("baseline_stem", None)
    heads_by_size = over.pop("head_size", None)
    strides = over.pop("strides", None)
    channels = info.image_shape[2]
    kw = dict(input_shape=(config.image_size, config.image_size, channels), classes=info.num_classes,
        stem=config.stem, attention_stages=config.attention_stages, kernel_size=config.kernel_size,
        num_heads=config.num_heads, base_width=config.base_width, use_relative_position=config.use_relative_position)
    kw.update(over)
    blocks = {"sasa_resnet26": (1, 2, 4, 1)}[config.model]
    model = resnet.SASAResNet(blocks, stackwise_strides=strides or (1, 2, 2, 2), name="m", **kw)
    if config.batch_norm_momentum is not None:
        recipe.set_batch_norm_momentum(model, config.batch_norm_momentum)
    return model
run_mod.build_model = build_model
cfg = dict(spec.get("config", {}))
if "attention_stages" in cfg and cfg["attention_stages"] is not None: cfg["attention_stages"] = tuple(cfg["attention_stages"])
config = training.TrainConfig(output_dir=f"runs/digits_screening/{name}", verbose=0, **cfg)
t = time.time()
res = training.train(config, log=lambda m: None)
wall = time.time() - t
import csv
rows = list(csv.DictReader(open(f"runs/digits_screening/{name}/history.csv")))
q = len(rows)//4
out = dict(name=name, test=round(res["test_accuracy"]*100, 2), train=round(float(rows[-1]["accuracy"])*100, 2),
           ips=round(res["train_images_per_second"]), params=res["params"], mflops=round(res["flops"]/1e6, 2), wall=round(wall),
           val_curve=[round(float(r["val_accuracy"])*100,1) for r in rows[q-1::q]], spec=spec)
print(json.dumps(out)); open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "digits_screening", "results.jsonl"), "a").write(json.dumps(out) + "\n")
