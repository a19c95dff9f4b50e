"""The SASA-ResNet builders, their FLOP count and the paper's tables."""

import keras
import numpy as np
import pytest

from backend import BACKEND
from backend import numpy
import keras_sasa
from keras_sasa import models
from keras_sasa.models import paper

# --- Parameter counts and FLOPs against the paper (224 x 224, 1000 classes) -----------------


def builds_paper_models(test):
    """Marks a test that builds the paper's 224 x 224 ResNets slow. Parameters and FLOPs are
    shape arithmetic, the same on every backend: they are counted under TensorFlow only."""
    on_tensorflow = pytest.mark.skipif(BACKEND != "tensorflow", reason="the same on every backend")
    return pytest.mark.slow(on_tensorflow(test))


# Paper, Table 1: (GFLOPs, params in millions).
TABLE_1 = {
    ("ResNet-26", "conv", ()): (4.7, 13.7),
    ("ResNet-26", "conv", (1, 2, 3, 4)): (4.5, 10.3),
    ("ResNet-26", "attention", (1, 2, 3, 4)): (4.7, 10.3),
    ("ResNet-38", "conv", ()): (6.5, 19.6),
    ("ResNet-38", "conv", (1, 2, 3, 4)): (5.7, 14.1),
    ("ResNet-38", "attention", (1, 2, 3, 4)): (6.0, 14.1),
    ("ResNet-50", "conv", ()): (8.2, 25.6),
    ("ResNet-50", "conv", (1, 2, 3, 4)): (7.0, 18.0),
    ("ResNet-50", "attention", (1, 2, 3, 4)): (7.2, 18.0),
}
# Paper, Table 3 (ResNet-50, conv stem): attention groups -> (GFLOPs, params in millions).
TABLE_3 = {
    (1, 2, 3, 4): (7.0, 18.0),
    (2, 3, 4): (7.3, 18.1),
    (3, 4): (7.5, 18.5),
    (4,): (8.0, 20.8),
    (): (8.2, 25.6),
    (1,): (7.9, 25.5),
    (1, 2): (7.8, 25.0),
    (1, 2, 3): (7.2, 22.7),
}


@builds_paper_models
@pytest.mark.parametrize("depth, stem, stages", list(TABLE_1))
def test_param_count_matches_table_1(depth, stem, stages):
    params, _ = paper.measure(depth, stem, stages)
    assert params / 1e6 == pytest.approx(TABLE_1[depth, stem, stages][1], rel=0.015)


@builds_paper_models
@pytest.mark.parametrize("stages", list(TABLE_3))
def test_param_count_matches_table_3(stages):
    params, _ = paper.measure("ResNet-50", "conv", stages)
    assert params / 1e6 == pytest.approx(TABLE_3[stages][1], rel=0.015)


@builds_paper_models
@pytest.mark.parametrize("stages", list(TABLE_3))
def test_flops_with_conv_stem_are_within_2_percent_of_table_3(stages):
    _, flops = paper.measure("ResNet-50", "conv", stages)
    assert flops / 1e9 == pytest.approx(TABLE_3[stages][0], rel=0.02)


@builds_paper_models
@pytest.mark.parametrize("depth, stem, stages", list(TABLE_1))
def test_flops_are_close_to_table_1(depth, stem, stages):
    """Conv stems within 2%. The attention stem over 4x4 blocks (one mixed value per
    pixel) is cheaper than the paper's count implies: about 0.25 GFLOPs short."""
    _, flops = paper.measure(depth, stem, stages)
    paper_flops = TABLE_1[depth, stem, stages][0]
    if stem == "conv":
        assert flops / 1e9 == pytest.approx(paper_flops, rel=0.02)
    else:
        assert 0.0 < paper_flops - flops / 1e9 < 0.3


@builds_paper_models
def test_paper_table_prints_paper_and_computed_numbers():
    text = paper.paper_table()
    params, flops = paper.measure("ResNet-50", "attention", (1, 2, 3, 4))
    row = next(line for line in text.splitlines() if line.startswith("ResNet-50 Full Attention"))
    assert row.split() == [
        "ResNet-50",
        "Full",
        "Attention",
        "7.2",
        f"{flops / 1e9:.2f}",
        f"{100 * (flops / 1e9 / 7.2 - 1):+.1f}%",
        "18.0",
        f"{params / 1e6:.2f}",
        f"{100 * (params / 1e6 / 18.0 - 1):+.1f}%",
        "77.6",
    ]
    assert len([line for line in text.splitlines() if line.startswith("ResNet-")]) == 9
    assert len([line for line in text.splitlines() if line.startswith("conv ")]) == 8


# --- count_flops on single layers ------------------------------------------------------------


def _one_layer(layer, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def test_count_flops_conv2d_and_dense():
    # 3x3 conv, 4 -> 8 channels, on 10 x 10 ("same"): 2 * 9 * 4 * 8 * 100.
    assert (
        models.count_flops(_one_layer(keras.layers.Conv2D(8, 3, padding="same"), (10, 10, 4)))
        == 57_600
    )
    # Stride 2: a quarter of the output pixels.
    assert (
        models.count_flops(
            _one_layer(keras.layers.Conv2D(8, 3, strides=2, padding="same"), (10, 10, 4))
        )
        == 14_400
    )
    assert models.count_flops(_one_layer(keras.layers.Dense(10), (64,))) == 1280


def test_count_flops_local_self_attention_counts_the_window_at_stride_one():
    # Per input pixel: 3 * C * F projections + 3 * k*k * F (q.k, q.r, weighted sum).
    layer = keras_sasa.LocalSelfAttention2D(16, kernel_size=7, num_heads=4, strides=2)
    per_pixel = 3 * 8 * 16 + 3 * 49 * 16
    assert models.count_flops(_one_layer(layer, (12, 12, 8))) == 2 * per_pixel * 144
    no_relative = keras_sasa.LocalSelfAttention2D(16, num_heads=4, use_relative_position=False)
    per_pixel = 3 * 8 * 16 + 2 * 49 * 16
    assert models.count_flops(_one_layer(no_relative, (12, 12, 8))) == 2 * per_pixel * 144


@pytest.mark.parametrize("window, values_per_pixel", [("block", 1), ("sliding", 16)])
def test_count_flops_attention_stem(window, values_per_pixel):
    layer = keras_sasa.AttentionStem2D(64, window=window)
    # q, k: 2 * 3 * 64; values: 3 * 64 per mixed matrix; q.k and weighted sum: 2 * 16 * 64.
    per_pixel = 2 * 192 + values_per_pixel * 192 + 2 * 16 * 64
    per_image = 16 * 4 * (64 + 192)  # p(a, b, m) and the 16 mixed value matrices
    assert models.count_flops(_one_layer(layer, (8, 8, 3))) == 2 * (per_pixel * 64 + per_image)


def test_count_flops_needs_known_height_and_width():
    model = _one_layer(keras.layers.Conv2D(4, 3), (None, None, 3))
    with pytest.raises(ValueError, match="known heights and widths"):
        models.count_flops(model)
    with pytest.raises(TypeError, match="`model`"):
        models.count_flops(keras.layers.Dense(3))


def test_count_flops_recurses_into_nested_models():
    inner = _one_layer(keras.layers.Conv2D(8, 3, padding="same"), (10, 10, 4))
    inputs = keras.Input((10, 10, 4))
    outer = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    assert models.count_flops(outer) == 57_600 + 2 * 8 * 2 * 100


# --- Architecture -----------------------------------------------------------------------------


def _tiny(stem="attention_small", size=8, blocks=(1, 1, 1, 1), **kwargs):
    kwargs.setdefault("base_width", 8)
    kwargs.setdefault("num_heads", 2)
    kwargs.setdefault("kernel_size", 3)
    kwargs.setdefault("classes", 3)
    return models.SASAResNet(blocks, input_shape=(size, size, 3), stem=stem, **kwargs)


def _attention_layers(model):
    return [l.name for l in model.layers if isinstance(l, keras_sasa.LocalSelfAttention2D)]


def test_registry_maps_names_to_builders():
    assert models.MODELS == {
        "sasa_resnet26": models.SASAResNet26,
        "sasa_resnet38": models.SASAResNet38,
        "sasa_resnet50": models.SASAResNet50,
        "sasa_resnet101": models.SASAResNet101,
        "sasa_resnet152": models.SASAResNet152,
    }
    assert keras_sasa.models is models


@pytest.mark.parametrize(
    "name, blocks",
    [
        ("sasa_resnet26", [1, 2, 4, 1]),
        ("sasa_resnet38", [2, 3, 5, 2]),
        ("sasa_resnet50", [3, 4, 6, 3]),
        ("sasa_resnet101", [3, 4, 23, 3]),
        ("sasa_resnet152", [3, 8, 36, 3]),
    ],
)
def test_named_models_have_the_paper_block_counts(name, blocks):
    model = models.MODELS[name](input_shape=(32, 32, 3), base_width=4, num_heads=2, classes=5)
    assert model.name == name
    adds = [l.name for l in model.layers if l.name.endswith("_add")]
    assert [sum(n.startswith(f"conv{g + 1}_") for n in adds) for g in range(1, 5)] == blocks
    assert len(_attention_layers(model)) == sum(blocks)
    assert model.output_shape == (None, 5)


def test_resnet50_shapes_and_v15_stride_placement():
    model = models.SASAResNet50(input_shape=(224, 224, 3))
    shape = {l.name: l.output.shape[1:] for l in model.layers}
    assert shape["pool1_pool"] == (56, 56, 64)
    assert shape["conv2_block3_out"] == (56, 56, 256)
    assert shape["conv3_block1_1_conv"] == (56, 56, 128)  # the 1x1 conv keeps the size...
    assert shape["conv3_block1_attn"] == (28, 28, 128)  # ...attention + 2x2 pool halves it
    assert shape["conv3_block1_0_conv"] == (28, 28, 512)
    assert shape["conv4_block6_out"] == (14, 14, 1024)
    assert shape["conv5_block3_out"] == (7, 7, 2048)
    assert model.output_shape == (None, 1000)
    attention = model.get_layer("conv3_block1_attn")
    assert (attention.strides, attention.kernel_size, attention.num_heads) == (2, 7, 8)
    assert model.get_layer("conv3_block1_1_conv").strides == (1, 1)
    stem = model.get_layer("conv1_attn")
    assert (stem.kernel_size, stem.num_heads, stem.window) == (4, 4, "block")


def test_no_attention_stages_gives_the_conv_baseline():
    model = models.SASAResNet50(input_shape=(224, 224, 3), stem="conv", attention_stages=())
    assert _attention_layers(model) == []
    assert not any(isinstance(l, keras_sasa.AttentionStem2D) for l in model.layers)
    conv = model.get_layer("conv3_block1_2_conv")
    assert (conv.kernel_size, conv.strides) == ((3, 3), (2, 2))
    assert model.get_layer("conv3_block1_2_conv").output.shape[1:] == (28, 28, 128)
    assert model.get_layer("pool1_pool").output.shape[1:] == (56, 56, 64)
    assert model.get_layer("conv5_block3_out").output.shape[1:] == (7, 7, 2048)


def test_attention_stages_choose_the_groups():
    model = _tiny(blocks=(1, 2, 1, 2), attention_stages=(2, 4))
    assert _attention_layers(model) == [
        "conv3_block1_attn",
        "conv3_block2_attn",
        "conv5_block1_attn",
        "conv5_block2_attn",
    ]
    assert {"conv2_block1_2_conv", "conv4_block1_2_conv"} <= {l.name for l in model.layers}


def test_layer_names_follow_keras_applications():
    names = [l.name for l in _tiny(stem="attention", size=32, blocks=(1, 2, 1, 1)).layers]
    assert names[1:4] == ["conv1_attn", "conv1_bn", "pool1_pool"]
    block = [n for n in names if n.startswith("conv3_block1_")]
    assert sorted(block) == sorted(
        [
            "conv3_block1_0_conv",
            "conv3_block1_0_bn",
            "conv3_block1_1_conv",
            "conv3_block1_1_bn",
            "conv3_block1_1_relu",
            "conv3_block1_attn",
            "conv3_block1_2_bn",
            "conv3_block1_2_relu",
            "conv3_block1_3_conv",
            "conv3_block1_3_bn",
            "conv3_block1_add",
            "conv3_block1_out",
        ]
    )
    assert "conv3_block2_0_conv" not in names  # identity shortcut after the first block
    assert names[-2:] == ["avg_pool", "predictions"]
    conv_names = [l.name for l in _tiny(stem="conv", size=32, attention_stages=()).layers]
    assert conv_names[1:7] == [
        "conv1_pad",
        "conv1_conv",
        "conv1_bn",
        "conv1_relu",
        "pool1_pad",
        "pool1_pool",
    ]
    assert "conv2_block1_2_conv" in conv_names


@pytest.mark.parametrize(
    "stem, size, stem_output",
    [
        ("attention", 32, (8, 8, 8)),
        ("conv", 32, (8, 8, 8)),
        ("attention_small", 8, (8, 8, 8)),
        ("conv_small", 8, (8, 8, 8)),
    ],
)
def test_stem_downsampling_at_the_smallest_input(stem, size, stem_output):
    assert models.min_input_size(stem) == size
    assert models.stem_reduction(stem) == size // stem_output[0]
    assert models.min_input_size(stem, (1, 1, 1, 1)) == models.stem_reduction(stem)
    model = _tiny(stem=stem, size=size)
    last_stem_layer = [l for l in model.layers if l.name.startswith(("conv1_", "pool1_"))][-1]
    assert last_stem_layer.output.shape[1:] == stem_output
    assert model.get_layer("conv5_block1_out").output.shape[1:3] == (1, 1)
    heads = [l.num_heads for l in model.layers if isinstance(l, keras_sasa.AttentionStem2D)]
    assert heads == ([] if models.stem_heads(stem) is None else [models.stem_heads(stem)])


def test_stem_facts_reject_an_unknown_stem():
    for fact in (models.stem_reduction, models.stem_heads, models.min_input_size):
        with pytest.raises(ValueError, match="stem='patchify'"):
            fact("patchify")


def test_include_top_false_and_pooling():
    # Group 4 of base width 8: 8 * 8 bottleneck channels, expanded 4x.
    assert _tiny(include_top=False).output_shape == (None, 1, 1, 256)
    assert _tiny(include_top=False, pooling="avg").output_shape == (None, 256)
    model = _tiny(include_top=False, pooling="max")
    assert model.layers[-1].name == "max_pool" and model.output_shape == (None, 256)


def test_unknown_height_and_width_without_top():
    model = models.SASAResNet26(
        include_top=False,
        pooling="avg",
        stem="conv_small",
        base_width=8,
        num_heads=2,
        kernel_size=3,
    )
    assert model.input_shape == (None, None, None, 3)
    for size in (8, 12):
        assert tuple(model(np.zeros((1, size, size, 3), "float32")).shape) == (1, 256)


def test_input_tensor_is_used_as_the_input():
    inputs = keras.Input((8, 8, 3), name="pixels")
    model = models.SASAResNet26(
        input_tensor=inputs, stem="conv_small", base_width=8, num_heads=2, classes=4
    )
    assert model.inputs[0] is inputs and model.output_shape == (None, 4)


def test_default_input_shapes():
    assert models.SASAResNet26(stem="conv", base_width=8).input_shape == (None, 224, 224, 3)
    assert models.SASAResNet26(stem="conv_small", base_width=8).input_shape == (None, 32, 32, 3)
    assert models.SASAResNet26(include_top=False, base_width=8).input_shape == (None, None, None, 3)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"stem": "patchify"}, ValueError, "stem='patchify'"),
        ({"attention_stages": (0, 1)}, ValueError, "attention_stages=(0, 1)"),
        ({"attention_stages": (5,)}, ValueError, "attention_stages=(5,)"),
        ({"attention_stages": 3}, TypeError, "attention_stages=3"),
        ({"pooling": "mean", "include_top": False}, ValueError, "pooling='mean'"),
        ({"classes": 0}, ValueError, "classes=0"),
        ({"classes": "10"}, TypeError, "classes='10'"),
        ({"weights": "imagenet"}, ValueError, "weights='imagenet'"),
        ({"weights": "/no/such/file.weights.h5"}, ValueError, "weights='/no/such/file"),
        ({"stem": "conv", "input_shape": (16, 16, 3)}, ValueError, "input_shape=(16, 16, 3)"),
        ({"stem": "attention", "input_shape": (31, 64, 3)}, ValueError, "input_shape=(31, 64"),
        ({"stem": "conv_small", "input_shape": (7, 7, 3)}, ValueError, "input_shape=(7, 7, 3)"),
        ({"input_shape": (32, 32)}, ValueError, "input_shape=(32, 32)"),
        ({"base_width": 0}, ValueError, "base_width=0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, fragment):
    name = fragment.split("=")[0]
    with pytest.raises(error, match=f"`{name}`") as info:
        models.SASAResNet26(**kwargs)
    assert fragment in str(info.value)


# --- Training, precision, serialization -------------------------------------------------------


def _data(n=4, size=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, size, size, 3)).astype("float32"), np.arange(n) % 3


def test_weights_argument_loads_a_weights_file(tmp_path):
    x, _ = _data()
    model = _tiny(stem="attention_small")
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    loaded = _tiny(stem="attention_small", weights=path)
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    x, _ = _data(size=32)
    model = _tiny(stem="attention", size=32, blocks=(1, 2, 1, 1))
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("conv1_attn"), keras_sasa.AttentionStem2D)
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))


# XLA compiles take many seconds on a shared 2-core CPU: the jit tests use a two-group
# network (the generic builder's per-group lists), attention in both groups, the second
# downsampling through attention + pooling.
def _two_groups(**kwargs):
    return models.SASAResNet(
        (1, 1),
        stackwise_num_filters=(8, 16),
        stackwise_strides=(1, 2),
        input_shape=(8, 8, 3),
        stem="attention_small",
        base_width=8,
        num_heads=2,
        kernel_size=3,
        classes=3,
        **kwargs,
    )


def test_jit_compiled_fit_trains():
    x, y = _data()
    model = _two_groups()
    assert len(_attention_layers(model)) == 2
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy", jit_compile=True)
    before = [numpy(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = [numpy(w) for w in model.trainable_weights]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_forward(policy):
    x, _ = _data(size=32)
    keras.mixed_precision.set_global_policy(policy)
    model = _tiny(stem="attention", size=32)
    assert all(w.dtype == "float32" for w in model.weights)
    assert (
        keras.backend.standardize_dtype(model.get_layer("conv5_block1_out").output.dtype)
        == (policy.split("_")[1])
    )
    probs = numpy(model(x))
    assert probs.dtype == np.float32 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_mixed_float16_jit_fit():
    x, y = _data()
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = _two_groups()
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy", jit_compile=True)
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(numpy(w)).all() for w in model.weights)


def test_attention_windows_shrink_to_what_small_feature_maps_reach():
    model = models.SASAResNet26(
        input_shape=(8, 8, 1), classes=10, stem="conv_small", base_width=8, num_heads=2
    )
    sizes = {
        l.name: l.kernel_size
        for l in model.layers
        if isinstance(l, keras_sasa.LocalSelfAttention2D)
    }
    # Maps: group 1 8x8; group 2's first block attends at 8x8, then 4x4; group 3's first
    # block at 4x4, then 2x2; group 4 at 2x2. A k x k window needs k <= 2n - 1.
    assert sizes == {
        "conv2_block1_attn": 7,
        "conv3_block1_attn": 7,
        "conv3_block2_attn": 7,
        "conv4_block1_attn": 7,
        "conv4_block2_attn": 3,
        "conv4_block3_attn": 3,
        "conv4_block4_attn": 3,
        "conv5_block1_attn": 3,
    }
    zeros = models.SASAResNet26(
        input_shape=(8, 8, 1),
        classes=10,
        stem="conv_small",
        base_width=8,
        num_heads=2,
        border="zeros",
    )
    assert zeros.get_layer("conv5_block1_attn").kernel_size == 7


def test_a_window_cut_to_the_feature_map_computes_what_the_wide_one_does():
    x = np.random.default_rng(0).normal(size=(2, 2, 3, 8)).astype("float32")
    wide = keras_sasa.LocalSelfAttention2D(8, kernel_size=7, num_heads=2)
    wide(x)
    narrow = keras_sasa.LocalSelfAttention2D(8, kernel_size=5, num_heads=2)
    narrow(x)
    # Offsets -2..2 of the narrow window are rows 1..5 of the wide window's tables.
    narrow.query_kernel.assign(wide.query_kernel)
    narrow.key_kernel.assign(wide.key_kernel)
    narrow.value_kernel.assign(wide.value_kernel)
    narrow.row_embeddings.assign(numpy(wide.row_embeddings)[1:6])
    narrow.column_embeddings.assign(numpy(wide.column_embeddings)[1:6])
    np.testing.assert_allclose(numpy(narrow(x)), numpy(wide(x)), atol=1e-6)
