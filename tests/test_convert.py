"""`keras_sasa.models.to_attention`: a Keras CNN's spatial convolutions become local
self-attention, everything else stays; the `convert` command (as a subprocess)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_sasa import LocalSelfAttention2D
from keras_sasa import export
from keras_sasa.models import count_flops
from keras_sasa.models import to_attention

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_cnn():
    """A Sequential CNN with each case: a stem, a 'valid' stride-2 conv made 'same' by the
    ZeroPadding2D before it (the keras.applications idiom) and with a ReLU of its own, a
    dilated conv, 1x1 and depthwise convs (kept)."""
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, padding="same", name="stem"),
            keras.layers.ZeroPadding2D(1, name="down_pad"),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="down"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Conv2D(16, 3, padding="same", dilation_rate=2, name="dilated"),
            keras.layers.Conv2D(8, 1, name="pointwise"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(5, name="head"),
        ],
        name="small_cnn",
    )


def images(batch=2, shape=(12, 12, 3), seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def layer_types(model):
    return {layer.name: type(layer).__name__ for layer in model.layers}


# --- What is replaced, and how --------------------------------------------------------------


def test_spatial_convolutions_become_attention_and_the_rest_stays():
    cnn = small_cnn()
    sasa = to_attention(cnn, kernel_size=5, num_heads=4)
    assert isinstance(sasa, keras.Sequential) and sasa.name == "small_cnn"
    assert layer_types(sasa) == {
        "stem": "Conv2D",  # keep_stem
        "down": "LocalSelfAttention2D",  # with its padding, and its ReLU after it
        "down_activation": "Activation",
        "bn": "BatchNormalization",
        "dilated": "LocalSelfAttention2D",
        "pointwise": "Conv2D",
        "depthwise": "DepthwiseConv2D",
        "pool": "GlobalAveragePooling2D",
        "head": "Dense",
    }
    down, dilated = sasa.get_layer("down"), sasa.get_layer("dilated")
    assert (down.filters, down.strides, down.dilation_rate, down.num_heads) == (16, 2, 1, 4)
    assert (dilated.filters, dilated.strides, dilated.dilation_rate) == (16, 1, 2)
    # The window on the 6 x 6 map: 5 fits (2 * 6 - 1 = 11).
    assert down.kernel_size == dilated.kernel_size == 5
    assert not down.use_bias  # The conv's bias is dropped (see the module docstring).
    assert sasa.get_layer("down_activation").get_config()["activation"] == "relu"
    assert sasa(images()).shape == (2, 5)


def test_the_activation_of_a_replaced_conv_is_applied_after_the_attention():
    cnn = small_cnn()
    sasa = to_attention(cnn, kernel_size=3, num_heads=4)
    probe = keras.Model(sasa.inputs[0], sasa.get_layer("down_activation").output)
    outputs = np.asarray(probe(images()))
    assert outputs.min() == 0.0 and outputs.max() > 0.0


def test_every_kept_layer_keeps_its_weights_and_the_input_model_is_unchanged():
    cnn = small_cnn()
    before = [w.copy() for w in cnn.get_weights()]
    types = layer_types(cnn)
    sasa = to_attention(cnn, kernel_size=3, num_heads=4)
    assert layer_types(cnn) == types
    for a, b in zip(cnn.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("stem", "bn", "pointwise", "depthwise", "head"):
        for a, b in zip(
            sasa.get_layer(name).get_weights(), cnn.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    # The copies are new variables: training the conversion leaves the CNN alone.
    sasa.get_layer("head").kernel.assign(np.zeros((8, 5), "float32"))
    np.testing.assert_array_equal(cnn.get_layer("head").get_weights()[0], before[-2])


def test_copy_weights_false_gives_fresh_layers():
    cnn = small_cnn()
    cnn.get_layer("head").kernel.assign(np.ones((8, 5), "float32"))
    sasa = to_attention(cnn, kernel_size=3, num_heads=4, copy_weights=False)
    assert not np.all(sasa.get_layer("head").get_weights()[0] == 1.0)


def test_keep_stem_false_and_layers_select_the_replaced_convolutions():
    cnn = small_cnn()
    everything = to_attention(cnn, kernel_size=3, num_heads=4, keep_stem=False)
    assert isinstance(everything.get_layer("stem"), LocalSelfAttention2D)
    by_name = to_attention(cnn, kernel_size=3, num_heads=4, layers=["dilated"])
    by_test = to_attention(cnn, kernel_size=3, num_heads=4, layers=lambda c: c.dilation_rate[0] > 1)
    for model in (by_name, by_test):
        replaced = [n for n, t in layer_types(model).items() if t == "LocalSelfAttention2D"]
        assert replaced == ["dilated"]
        # The padded 'valid' conv is kept, and so is its padding.
        assert layer_types(model)["down_pad"] == "ZeroPadding2D"


def test_attention_kwargs_reach_every_attention_layer():
    sasa = to_attention(
        small_cnn(), kernel_size=3, num_heads=2, use_relative_position=False, border="zeros"
    )
    for name in ("down", "dilated"):
        layer = sasa.get_layer(name)
        assert not layer.use_relative_position and layer.border == "zeros"


def test_a_window_wider_than_a_known_map_is_cut_as_the_builders_cut_it():
    # The 6 x 6 maps after the stride-2 layer reach 2 * 6 - 1 = 11 positions.
    sasa = to_attention(small_cnn(), kernel_size=15, num_heads=4, keep_stem=False)
    assert sasa.get_layer("stem").kernel_size == 15  # 12 x 12: 23 > 15
    assert sasa.get_layer("dilated").kernel_size == 11


def test_nested_models_are_converted():
    inner = keras.Sequential(
        [keras.Input((12, 12, 8)), keras.layers.Conv2D(8, 3, padding="same", name="inner_conv")],
        name="inner",
    )
    x = inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(x)
    x = inner(x)
    block_in = keras.Input((12, 12, 8))
    block = keras.Model(
        block_in,
        keras.layers.Conv2D(8, 5, padding="same", name="block_conv")(block_in),
        name="block",
    )
    x = keras.layers.Add(name="add")([x, block(x)])
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x), name="nested")
    sasa = to_attention(model, num_heads=4)
    assert [layer.name for layer in sasa.layers] == [layer.name for layer in model.layers]
    assert isinstance(sasa.get_layer("stem"), keras.layers.Conv2D)
    assert isinstance(sasa.get_layer("inner").get_layer("inner_conv"), LocalSelfAttention2D)
    assert isinstance(sasa.get_layer("block").get_layer("block_conv"), LocalSelfAttention2D)
    assert sasa(images(shape=(12, 12, 3))).shape == (2, 8)
    # Names in models inside the model can be chosen.
    only_block = to_attention(model, num_heads=4, layers=["block_conv"])
    assert isinstance(only_block.get_layer("inner").get_layer("inner_conv"), keras.layers.Conv2D)


def test_a_shared_layer_stays_shared():
    conv = keras.layers.Conv2D(4, 3, padding="same", name="shared")
    a, b = keras.Input((8, 8, 4), name="a"), keras.Input((8, 8, 4), name="b")
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")
    model = keras.Model([a, b], keras.layers.Add()([conv(stem(a)), conv(b)]))
    sasa = to_attention(model, kernel_size=3, num_heads=2)
    assert [t.name for t in sasa.inputs] == ["a", "b"]
    assert sum(isinstance(layer, LocalSelfAttention2D) for layer in sasa.layers) == 1
    x = images(shape=(8, 8, 4))
    assert sasa([x, x]).shape == (2, 8, 8, 4)


# --- What is refused ------------------------------------------------------------------------


def test_heads_that_do_not_divide_a_layers_filters_are_refused_naming_the_layer():
    with pytest.raises(
        ValueError, match=r"layer 'down': num_heads=3 does not divide its filters=16"
    ):
        to_attention(small_cnn(), num_heads=3)


def test_a_valid_convolution_without_its_padding_is_refused_naming_the_layer():
    cnn = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, padding="same", name="stem"),
            keras.layers.Conv2D(8, 3, name="shrinks"),
        ]
    )
    with pytest.raises(ValueError, match=r"Cannot replace layer 'shrinks': a 'valid' Conv2D"):
        to_attention(cnn, num_heads=2)


@pytest.mark.parametrize(
    "padding",
    [2, ((1, 0), (1, 0)), ((1, 1), (0, 0))],
    ids=["too-much", "too-little", "rows-only"],
)
def test_a_padding_that_does_not_make_the_conv_same_is_refused(padding):
    cnn = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, padding="same", name="stem"),
            keras.layers.ZeroPadding2D(padding, name="pad"),
            keras.layers.Conv2D(8, 3, name="conv"),
        ]
    )
    with pytest.raises(ValueError, match=r"Cannot replace layer 'conv'"):
        to_attention(cnn, num_heads=2)


def test_a_padding_read_by_another_layer_too_is_not_merged():
    x = inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(x)
    padded = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(4, 3, name="conv")(padded)
    side = keras.layers.GlobalAveragePooling2D()(padded)
    model = keras.Model(inputs, [x, side])
    with pytest.raises(ValueError, match=r"Cannot replace layer 'conv'"):
        to_attention(model, num_heads=2)


def test_unequal_strides_are_refused_naming_the_layer():
    cnn = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 3, padding="same", name="stem"),
            keras.layers.Conv2D(8, 3, strides=(1, 2), padding="same", name="wide"),
        ]
    )
    with pytest.raises(ValueError, match=r"Cannot replace layer 'wide'.*strides=\(1, 2\)"):
        to_attention(cnn, num_heads=2)


def test_bad_arguments_are_refused_naming_them():
    cnn = small_cnn()
    with pytest.raises(ValueError, match="`kernel_size`.*kernel_size=4"):
        to_attention(cnn, kernel_size=4)
    with pytest.raises(ValueError, match="`layers`.*'nope'"):
        to_attention(cnn, layers=["stem", "nope"])
    with pytest.raises(ValueError, match="`layers`.*'pointwise'"):  # Not a spatial conv.
        to_attention(cnn, layers=["pointwise"])
    with pytest.raises(TypeError, match="`layers`"):
        to_attention(cnn, layers="stem")
    with pytest.raises(ValueError, match="`attention_kwargs`.*strides"):
        to_attention(cnn, strides=2)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="`model`"):
        to_attention(Subclassed())


# --- Saving, training, export ---------------------------------------------------------------


def test_the_conversion_round_trips_through_a_keras_file_in_safe_mode(tmp_path):
    sasa = to_attention(small_cnn(), kernel_size=3, num_heads=4)
    path = str(tmp_path / "sasa.keras")
    sasa.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert layer_types(loaded) == layer_types(sasa)
    x = images()
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(sasa(x)))


def functional_cnn():
    x = inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(x)
    x = keras.layers.ZeroPadding2D(1, name="down_pad")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, name="down")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x))


@pytest.mark.parametrize("build", [small_cnn, functional_cnn], ids=["sequential", "functional"])
def test_a_model_loaded_from_a_keras_file_converts_as_the_one_saved(build, tmp_path):
    cnn = build()
    cnn.save(tmp_path / "cnn.keras")
    loaded = keras.saving.load_model(tmp_path / "cnn.keras")
    expected = to_attention(cnn, kernel_size=3, num_heads=4)
    assert layer_types(to_attention(loaded, kernel_size=3, num_heads=4)) == layer_types(expected)
    assert "down_pad" not in layer_types(expected)


def test_the_conversion_trains():
    sasa = to_attention(small_cnn(), kernel_size=3, num_heads=4)
    sasa.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    before = sasa.get_layer("down").get_weights()[0].copy()
    labels = np.array([0, 3])
    first = sasa.train_on_batch(images(), labels)
    for _ in range(3):
        last = sasa.train_on_batch(images(), labels)
    assert np.isfinite(last) and last < first
    assert not np.array_equal(sasa.get_layer("down").get_weights()[0], before)


@pytest.mark.slow
def test_the_conversion_exports_to_tflite_and_onnx(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    sasa = to_attention(small_cnn(), kernel_size=3, num_heads=4)
    x = images()
    expected = np.asarray(sasa(x))
    tflite = export.run_tflite(export.to_tflite(sasa), x)
    np.testing.assert_allclose(tflite, expected, atol=1e-4)
    path = export.to_onnx(sasa, tmp_path / "sasa.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (source,) = session.get_inputs()
    np.testing.assert_allclose(session.run(None, {source.name: x})[0], expected, atol=1e-4)


JAX_SCRIPT = """
import keras, numpy as np
from keras_sasa.models import to_attention
from test_convert import images, small_cnn
assert keras.backend.backend() == "jax"
sasa = to_attention(small_cnn(), kernel_size=3, num_heads=4)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
sasa.compile(keras.optimizers.SGD(0.1), loss)
first = sasa.train_on_batch(images(), np.array([0, 3]))
last = [sasa.train_on_batch(images(), np.array([0, 3])) for _ in range(3)][-1]
sasa.save("sasa.keras")
loaded = keras.saving.load_model("sasa.keras", safe_mode=True)
print(first > last, float(np.abs(np.asarray(loaded(images())) - np.asarray(sasa(images()))).max()))
"""


@pytest.mark.slow
def test_the_conversion_trains_and_round_trips_under_jax(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, os.path.join(REPO_ROOT, "tests")]))
    done = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "0.0"]


# --- keras.applications and the paper -------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50():
    model = keras.applications.ResNet50(weights=None)
    return model, to_attention(model)


@pytest.fixture(scope="module")
def resnet50v2():
    model = keras.applications.ResNet50V2(weights=None)
    return model, to_attention(model)


@pytest.mark.slow
def test_resnet50_with_its_stem_kept_has_table_1s_conv_stem_attention_count(resnet50):
    """Table 1, ResNet-50 "conv stem + attention": 18.0M parameters, 7.0 GFLOPs. The
    keras.applications ResNet-50 is v1 (the stride in the first 1x1 convolution), so its
    3x3 layers see maps already downsampled: 5.66 GFLOPs, where the paper's v1.5 layout
    (`SASAResNet50(stem="conv")`) counts 7.0."""
    cnn, sasa = resnet50
    attention = [layer for layer in sasa.layers if isinstance(layer, LocalSelfAttention2D)]
    assert len(attention) == 16
    assert isinstance(sasa.get_layer("conv1_conv"), keras.layers.Conv2D)
    assert sasa.count_params() == 18_114_536
    assert sasa.count_params() == pytest.approx(18.0e6, rel=0.015)
    assert cnn.count_params() == 25_636_712
    assert count_flops(sasa) == 5_655_368_704


def kept_shapes(cnn, sasa):
    """Output shapes of the CNN's layers that the conversion kept, in both models."""
    new = {layer.name: layer for layer in sasa.layers}
    pairs = {}
    for layer in cnn.layers:
        if layer.name in new and not isinstance(new[layer.name], LocalSelfAttention2D):
            pairs[layer.name] = (layer.output.shape, new[layer.name].output.shape)
    return pairs


@pytest.mark.slow
@pytest.mark.parametrize("which", ["resnet50", "resnet50v2"])
def test_every_kept_layer_of_a_keras_applications_resnet_keeps_its_output_shape(which, request):
    cnn, sasa = request.getfixturevalue(which)
    pairs = kept_shapes(cnn, sasa)
    assert all(old == new for old, new in pairs.values())
    replaced = {l.name for l in sasa.layers if isinstance(l, LocalSelfAttention2D)}
    dropped = {l.name for l in cnn.layers} - {l.name for l in sasa.layers}
    assert len(replaced) == 16
    # Every replaced conv has the output shape it had.
    for name in replaced:
        assert sasa.get_layer(name).output.shape == cnn.get_layer(name).output.shape
    if which == "resnet50":
        assert dropped == set()
    else:
        assert sasa.count_params() == 18_095_400
        # ResNet50V2's 3x3 convs are 'valid' after a ZeroPadding2D (strided ones too):
        # each is replaced with its padding; the stem's padding stays with the stem.
        assert dropped == {name.replace("_conv", "_pad") for name in replaced}
        assert "conv1_pad" in pairs
        strided = [n for n in replaced if sasa.get_layer(n).strides == 2]
        assert sorted(strided) == [
            "conv2_block3_2_conv",
            "conv3_block4_2_conv",
            "conv4_block6_2_conv",
        ]


# --- The command ----------------------------------------------------------------------------


def run_cli(args, cwd):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "keras_sasa", "convert", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def refusal(result):
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.splitlines()[-1]]
    return errors[0]


@pytest.mark.slow
def test_convert_command_prints_the_replaced_layers_and_writes_the_model(tmp_path):
    cnn = small_cnn()
    cnn.save(tmp_path / "cnn.keras")
    done = run_cli(["cnn.keras", "sasa.keras", "--kernel-size", "3", "--num-heads", "4"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    sasa = to_attention(cnn, kernel_size=3, num_heads=4)
    down, dilated = sasa.get_layer("down"), sasa.get_layer("dilated")
    assert lines[0].split() == [
        "layer",
        "filters",
        "strides",
        "params",
        "before",
        "params",
        "after",
    ]
    assert lines[1].split() == ["down", "16", "2", "1,168", f"{down.count_params():,}"]
    assert lines[2].split() == ["dilated", "16", "1", "2,320", f"{dilated.count_params():,}"]
    assert (
        f"2 layers replaced. Parameters: {cnn.count_params():,} -> {sasa.count_params():,}."
        in lines
    )
    loaded = keras.saving.load_model(tmp_path / "sasa.keras", safe_mode=True)
    assert layer_types(loaded) == layer_types(sasa)
    # Heads that do not divide a layer's filters: one line naming the layer, exit 2.
    message = refusal(run_cli(["cnn.keras", "bad.keras", "--num-heads", "3"], tmp_path))
    assert "layer 'down'" in message and "filters=16" in message
    assert not (tmp_path / "bad.keras").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, words",
    [
        (["missing.keras", "out.keras"], "no such model file: missing.keras"),
        (["in.keras", "out.h5"], "must end in .keras"),
        (["in.keras", "out.keras", "--kernel-size", "4"], "--kernel-size must be odd"),
        (["in.keras", "nowhere/out.keras"], "no directory"),
    ],
    ids=["missing", "suffix", "even-kernel", "no-directory"],
)
def test_convert_command_refuses_bad_input_in_one_line(tmp_path, args, words):
    (tmp_path / "in.keras").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # An empty zip.
    assert words in refusal(run_cli(args, tmp_path))
