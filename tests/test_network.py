"""N-layer models (digits/network.py): the layer list chains or is refused naming the file and
the layer, and the NumPy forward pass computes what the layers say."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from digits.manifest import ManifestError, check_manifest, layer_specs
from digits.network import Network, load_model, max_pool
from digits.theta import Model, ThetaError, parse_pair, to_csv
from tests.conftest import CNN_LAYERS, cnn_manifest, random_cnn, replace_layer, reshape_file, set_cell


def digits(count: int, seed: int = 0) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.random.default_rng(seed).random((count, 784), dtype=np.float32)


def test_a_pair_without_layers_is_the_seeds_mlp() -> None:
    rng = np.random.default_rng(2017)
    files = {"theta1.csv": to_csv(rng.normal(size=(785, 300))), "theta2.csv": to_csv(rng.normal(size=(301, 10)))}
    model = load_model(files, None, "seed")
    assert isinstance(model, Model) and model.architecture == "dense300-dense10"
    x = digits(5)
    reference = Model(parse_pair(files["theta1.csv"], files["theta2.csv"]))
    assert np.array_equal(model.probabilities(x), reference.probabilities(x))


def direct_forward(files: dict[str, bytes], x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The cnn layers by their definitions, one output value at a time in float64: no im2col."""
    w = {name: np.loadtxt(data.decode().splitlines(), delimiter=",") for name, data in files.items()}

    def conv(a: np.ndarray[Any, Any], matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        kernel = matrix[1:].reshape(3, 3, a.shape[2], -1)
        padded = np.pad(a, ((1, 1), (1, 1), (0, 0)))
        out = np.empty((a.shape[0], a.shape[1], kernel.shape[3]))
        for y in range(out.shape[0]):
            for x_ in range(out.shape[1]):
                out[y, x_] = np.tensordot(padded[y:y + 3, x_:x_ + 3], kernel, axes=3) + matrix[0]
        return np.maximum(out, 0)

    def pool(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        h, w_ = a.shape[0] // 2, a.shape[1] // 2
        return np.array([[a[2 * y:2 * y + 2, 2 * x_:2 * x_ + 2].max(axis=(0, 1)) for x_ in range(w_)]
                         for y in range(h)])

    out = []
    for digit in x:
        a = pool(conv(pool(conv(digit.reshape(28, 28, 1).astype(np.float64), w["layer1.csv"])), w["layer2.csv"]))
        hidden = np.maximum(a.reshape(-1) @ w["layer3.csv"][1:] + w["layer3.csv"][0], 0)
        logits = hidden @ w["layer4.csv"][1:] + w["layer4.csv"][0]
        exps = np.exp(logits - logits.max())
        out.append(exps / exps.sum())
    return np.array(out)


def test_the_forward_pass_computes_the_layers_by_their_definitions() -> None:
    """im2col's (dy, dx, channel) row order, "same" padding, pooling and flattening, checked
    against convolutions summed one output at a time (Keras itself: tests/test_trainer.py)."""
    files = random_cnn(seed=3)
    model = load_model(files, {"layers": CNN_LAYERS}, "v")
    assert isinstance(model, Network)
    assert model.architecture == "conv3x16-pool2-conv3x32-pool2-dense8-dense10"
    x = digits(3)
    np.testing.assert_allclose(model.probabilities(x), direct_forward(files, x), atol=1e-5)


def test_a_batch_larger_than_a_block_gives_each_digit_what_it_gets_alone() -> None:
    model = load_model(random_cnn(), {"layers": CNN_LAYERS}, "v")
    assert isinstance(model, Network)
    x = digits(model.block_rows * 2 + 3)
    together = model.probabilities(x)
    np.testing.assert_allclose(together[-3:], model.probabilities(x[-3:]), atol=1e-6)
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-5)


def test_stride_two_valid_convolution_and_ragged_pool() -> None:
    """Other settings of the contract than the preset's: a 5x5 stride-2 "valid" convolution
    (28 -> 12) then a 3x3 pool (12 -> 4)."""
    rng = np.random.default_rng(1)
    layers = [{"op": "conv", "file": "c.csv", "kernel": 5, "stride": 2, "padding": "valid", "activation": "relu"},
              {"op": "maxpool", "size": 3},
              {"op": "dense", "file": "d.csv", "activation": "softmax"}]
    c, d = rng.normal(size=(26, 4)), rng.normal(size=(4 * 4 * 4 + 1, 10))
    model = load_model({"c.csv": to_csv(c), "d.csv": to_csv(d)}, {"layers": layers}, "v")
    x = digits(2)
    expected = []
    for digit in x.reshape(-1, 28, 28).astype(np.float64):
        conv = np.array([[[np.sum(digit[2 * y:2 * y + 5, 2 * x_:2 * x_ + 5].reshape(-1) * c[1:, k]) + c[0, k]
                           for k in range(4)] for x_ in range(12)] for y in range(12)])
        pooled = max_pool(np.maximum(conv, 0)[None], (3, 3))[0]
        logits = pooled.reshape(-1) @ d[1:] + d[0]
        expected.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
    np.testing.assert_allclose(model.probabilities(x), np.array(expected), atol=1e-5)


def conv_after_dense(layers: list[dict[str, Any]], _files: dict[str, bytes]) -> None:
    layers.insert(5, {"op": "maxpool", "size": 2})


BAD_LAYERS: list[tuple[str, Any, type[Exception], str]] = [
    ("conv rows do not chain", reshape_file("layer2.csv", 100, 32), ThetaError,
     r"v/layer2\.csv, layer 3 \(conv\): 100 rows, but a 3x3 convolution of 16 channel\(s\) needs 144 weight rows"),
    ("dense rows do not chain", reshape_file("layer3.csv", 785, 8), ThetaError,
     r"v/layer3\.csv, layer 5 \(dense\): 785 rows, but a dense layer on 1568 inputs needs 1568"),
    ("last layer not 10 classes", reshape_file("layer4.csv", 9, 7), ThetaError,
     r"v/layer4\.csv, layer 6: 7 outputs, the model must end in 10 classes"),
    ("unknown operation", replace_layer(1, op="avgpool"), ManifestError,
     r"layers\[2\]: unknown operation 'avgpool'"),
    ("non-finite value", set_cell("layer2.csv", 5, 3, b"inf"), ThetaError,
     r"v/layer2\.csv: row 6, column 4: inf is not a finite"),
    ("unknown activation", replace_layer(0, activation="gelu"), ManifestError,
     r"layers\[1\]: activation 'gelu' is not one of"),
    ("softmax before the end", replace_layer(4, activation="softmax"), ManifestError,
     r"softmax is only the last layer's activation"),
    ("ends without softmax", replace_layer(5, activation="relu"), ManifestError,
     r"layers\[6\] is not a dense softmax"),
    ("a file name with a path", replace_layer(0, file="../x.csv"), ManifestError,
     r"layers\[1\]: file '\.\./x\.csv' is not a layer file name"),
    ("a kernel too big", replace_layer(0, kernel=16), ManifestError, r"layers\[1\]: kernel 16 is not a whole number"),
    ("a [height, width] window", replace_layer(1, size=[2, 2]), ManifestError,
     r"layers\[2\] has a \[height, width\] window; a digit model's are one number"),
    ("a 1x1 pool", replace_layer(1, size=[1, 1]), ManifestError, r"layers\[2\]: size \[1, 1\] is not a whole number"),
    ("a pool after a dense layer", conv_after_dense, ThetaError, r"layer 6 \(maxpool\): needs an image, and layer 5"),
]


@pytest.mark.parametrize(("case", "damage", "error", "message"), BAD_LAYERS, ids=[c[0] for c in BAD_LAYERS])
def test_a_malformed_layer_is_refused_naming_the_file_and_the_layer(
        case: str, damage: Any, error: type[Exception], message: str) -> None:
    files, layers = random_cnn(), copy.deepcopy(CNN_LAYERS)
    damage(layers, files)
    with pytest.raises(error, match=message):
        load_model(files, {"layers": layers}, "v")


def test_a_model_costlier_than_the_limit_is_refused_before_any_digit() -> None:
    rng = np.random.default_rng(0)
    layers = [{"op": "conv", "file": "c.csv", "kernel": 7, "stride": 1, "padding": "same", "activation": "relu"},
              {"op": "conv", "file": "c2.csv", "kernel": 7, "stride": 1, "padding": "same", "activation": "relu"},
              {"op": "maxpool", "size": 4},
              {"op": "dense", "file": "d.csv", "activation": "softmax"}]
    files = {"c.csv": to_csv(rng.normal(size=(50, 64))), "c2.csv": to_csv(rng.normal(size=(49 * 64 + 1, 64))),
             "d.csv": to_csv(rng.normal(size=(7 * 7 * 64 + 1, 10)))}
    with pytest.raises(ThetaError, match=r"v: \d+ multiply-adds per digit, over the limit of 20000000"):
        load_model(files, {"layers": layers}, "v")


def test_a_model_whose_layers_need_too_much_memory_is_refused_before_any_digit() -> None:
    """Cheap in multiply-adds, but 4,096 channels of 28 x 28: 13 MB a digit in one layer."""
    rng = np.random.default_rng(0)
    layers = [{"op": "conv", "file": "wide.csv", "kernel": 1, "stride": 1, "padding": "valid", "activation": "relu"},
              {"op": "maxpool", "size": 4},
              {"op": "maxpool", "size": 4},
              {"op": "dense", "file": "d.csv", "activation": "softmax"}]
    files = {"wide.csv": to_csv(rng.normal(size=(2, 4096))), "d.csv": to_csv(rng.normal(size=(4096 + 1, 10)))}
    with pytest.raises(ThetaError, match=r"v: \d+ floats of temporaries per digit in one layer, over the limit"):
        load_model(files, {"layers": layers}, "v")


def test_the_manifest_lists_the_layer_files_in_order() -> None:
    files = random_cnn()
    manifest = cnn_manifest(files, "cnn-1")
    assert manifest["layers"] == CNN_LAYERS and list(manifest["files"]) == list(files)
    assert manifest["architecture"] == "conv3x16-pool2-conv3x32-pool2-dense8-dense10"
    assert check_manifest(manifest, "m") is manifest
    del manifest["files"]["layer3.csv"]
    with pytest.raises(ManifestError, match=r"m: files\.layer3\.csv\.sha256 is missing"):
        check_manifest(manifest, "m")
    with pytest.raises(ManifestError, match="layers is not a list of 1 to 16 layers"):
        layer_specs([], "m")
    with pytest.raises(ManifestError, match="layers name a file twice"):
        layer_specs([CNN_LAYERS[4], {**CNN_LAYERS[5], "file": "layer3.csv"}], "m")
