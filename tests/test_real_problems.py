"""Real problems (Fashion-MNIST, CIFAR / cifar-synthetic, MNIST-1D, stdlib text), their data readers, info(), and
custom problems from your own model and data (plain modules, loss(model, batch), DataLoaders, Hugging Face)."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import workbench as wb
from workbench.problems import data as D

REAL = ["fashion-cnn", "fashion-resnet", "cifar-resnet", "cifar-vgg", "cifar-vit", "mnist1d-mlp", "mnist1d-cnn",
        "text-gpt"]
SYN = dict(data="synthetic", n_train=96, n_test=32)
TINY = {
    "fashion-cnn": dict(n_train=128, n_test=32, width=4, depth=2),
    "fashion-resnet": dict(n_train=64, n_test=32, depth=8, width=0.25),
    "cifar-resnet": dict(SYN, depth=8, width=0.25),
    "cifar-vgg": dict(SYN, width=0.0625, batchnorm=True),
    "cifar-vit": dict(SYN, dim=16, depth=1, heads=2, patch=8),
    "mnist1d-mlp": dict(n_train=256, n_test=64, width=32),
    "mnist1d-cnn": dict(n_train=256, n_test=64, width=8),
    "text-gpt": dict(n_chars=20_000, block_size=32, n_layer=1, n_head=2, n_embd=16, n_train=48, n_test=8),
}
OPT = {"fashion-cnn": ("adam", 3e-3), "fashion-resnet": ("sgd", 0.05), "cifar-resnet": ("adam", 3e-3),
       "cifar-vgg": ("adam", 3e-3), "cifar-vit": ("adam", 3e-3), "mnist1d-mlp": ("sgd", 0.1),
       "mnist1d-cnn": ("adam", 3e-3), "text-gpt": ("adam", 1e-2)}


# -- registry, training, determinism -------------------------------------------------------------------------------
def test_real_problems_registered():
    names = wb.problems.list("classification")
    for n in REAL:
        assert n in names
    for n in ("cifar-resnet", "cifar-vgg", "cifar-vit"):
        data = {p.name: p for p in wb.problems.options(n)}["data"]
        assert data.default == "real" and set(data.choices) == {"real", "synthetic"}
    gpt = {p.name: p.default for p in wb.problems.options("text-gpt")}
    assert (gpt["n_layer"], gpt["n_head"], gpt["n_embd"], gpt["block_size"]) == (6, 6, 384, 256)


@pytest.mark.parametrize("name", REAL)
def test_builds_trains_and_is_deterministic(name):
    prob = wb.problems.make(name, seed=3, **TINY[name])
    assert prob.kind == "classification" and "accuracy" in prob.metrics
    opt, lr = OPT[name]
    runs = [wb.train(prob, optimizer=opt, lr=lr, steps=12, batch_size=32, seed=1, device="cpu", progress=False)
            for _ in range(2)]
    loss = runs[0].record["loss"].values
    assert runs[0].status == "finished" and np.isfinite(loss).all()
    assert loss[-3:].mean() < loss[:3].mean() - 0.02, loss
    np.testing.assert_array_equal(loss, runs[1].record["loss"].values)
    # same seed -> the same initial model and data from a fresh make
    again = wb.problems.make(name, seed=3, **TINY[name])
    for a, b in zip(prob.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(prob.data("train"), again.data("train")))
    other = wb.problems.make(name, seed=4, **TINY[name])
    assert not all(torch.equal(a, b) for a, b in zip(prob.model.parameters(), other.model.parameters()))


# -- Fashion-MNIST -------------------------------------------------------------------------------------------------
def test_fashion_mnist_is_the_real_dataset():
    raw = D.load_fashion_mnist()
    assert raw["x_train"].shape == (60000, 28, 28) and raw["x_test"].shape == (10000, 28, 28)
    assert raw["x_train"].dtype == np.uint8 and set(np.unique(raw["y_train"])) == set(range(10))
    assert np.bincount(raw["y_train"]).tolist() == [6000] * 10          # Fashion-MNIST is exactly balanced
    prob = wb.problems.make("fashion-cnn", n_train=3000, n_test=10)
    x, y = prob.data("train")
    assert x.shape == (3000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    expect = (raw["x_train"][:3000].astype(np.float64) / 255 - D.FASHION_MNIST_MEAN[0]) / D.FASHION_MNIST_STD[0]
    np.testing.assert_allclose(x[:, 0].numpy(), expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), raw["y_train"][:3000])
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05    # the documented constants fit
    assert len(prob.test) == 10


def test_fashion_mnist_missing_names_package_and_path(tmp_path):
    with pytest.raises(ValueError, match="dataset-fashion-mnist") as exc:
        wb.problems.make("fashion-cnn", data_dir=str(tmp_path), n_train=10)
    assert str(tmp_path) in str(exc.value)
    ok, note = D.fashion_mnist_status(tmp_path)
    assert not ok and "apt-get install dataset-fashion-mnist" in note
    inf = wb.problems.info("fashion-resnet", data_dir=str(tmp_path))
    assert inf["data_available"] is False and str(tmp_path) in inf["data_note"]


def test_fashion_mnist_data_dir_and_env(tmp_path, monkeypatch):
    """A folder holding the idx files (plain or gzipped) works as data_dir or via WORKBENCH_DATA (its parent)."""
    import gzip
    import struct
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    imgs = {"train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), "t10k": rng.integers(0, 256, (3, 28, 28),
                                                                                             dtype=np.uint8)}
    labels = {"train": np.array([0, 1, 2, 3, 4, 9], np.uint8), "t10k": np.array([5, 6, 7], np.uint8)}
    for split in ("train", "t10k"):
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, *imgs[split].shape) + imgs[split].tobytes())
        with open(folder / f"{split}-labels-idx1-ubyte", "wb") as f:        # uncompressed is accepted too
            f.write(struct.pack(">BBBBI", 0, 0, 8, 1, len(labels[split])) + labels[split].tobytes())
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    prob = wb.problems.make("fashion-cnn", width=2, depth=1)
    x, y = prob.data("train")
    assert x.shape == (6, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4, 9] and len(prob.test) == 3
    np.testing.assert_allclose(x[2, 0].numpy(), (imgs["train"][2] / 255 - 0.2860) / 0.3530, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"n_train=7 is out of range.*\[1, 6\]"):
        wb.problems.make("fashion-cnn", n_train=7)
    assert wb.problems.info("fashion-cnn", data_dir=str(folder))["data_available"]
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x01")     # bad magic -> clear error
    D._fashion_arrays.cache_clear()
    with pytest.raises(ValueError, match="idx file"):
        D.load_fashion_mnist(folder)


# -- CIFAR ---------------------------------------------------------------------------------------------------------
def _write_cifar(root, classes=10, n_per_batch=3, seed=0):
    """A tiny CIFAR folder in the exact python-pickle layout; returns the arrays written."""
    sub, train, test, key = D.CIFAR_LAYOUT[classes]
    folder = root / sub
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in train + test:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n_per_batch).tolist()
        d = {b"batch_label": name.encode(), key: labels, b"data": data, b"filenames": [b"x.png"] * n_per_batch}
        if classes == 100:
            d[b"coarse_labels"] = [0] * n_per_batch
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        written[name] = (data, labels)
    return folder, written


def test_fake_cifar10_folder_loads_in_the_pickle_layout(tmp_path, monkeypatch):
    folder, written = _write_cifar(tmp_path)
    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    for data_dir in (str(tmp_path), str(folder)):                    # the parent or the folder itself
        prob = wb.problems.make("cifar-vit", data_dir=data_dir, dim=8, depth=1, heads=2, patch=8)
        x, y = prob.data("train")
        assert x.shape == (15, 3, 32, 32) and y.dtype == torch.long
        exp_y = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
        assert y.tolist() == exp_y
        xt, yt = prob.data("test")
        assert xt.shape == (3, 3, 32, 32) and yt.tolist() == written["test_batch"][1]
    # layout: each row is R(32x32) G B, row-major; normalised per channel with the CIFAR-10 constants
    raw = written["data_batch_2"][0][1]                                # batch 2, example 1 -> index 4
    for c in range(3):
        for (h, w) in ((0, 0), (5, 17), (31, 31)):
            v = raw[c * 1024 + h * 32 + w]
            assert x[4, c, h, w].item() == pytest.approx((v / 255 - D.CIFAR10_MEAN[c]) / D.CIFAR10_STD[c], abs=1e-5)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    assert wb.problems.make("cifar-resnet", depth=8, width=0.25, n_train=4).data("train")[0].shape[0] == 4
    inf = wb.problems.info("cifar-vgg")
    assert inf["data_available"] and str(folder) in inf["data_note"] and inf["n_train"] == 50000


def test_fake_cifar100_and_unsafe_pickle(tmp_path):
    folder, written = _write_cifar(tmp_path, classes=100, n_per_batch=5)
    prob = wb.problems.make("cifar-resnet", classes=100, data_dir=str(tmp_path), depth=8, width=0.25)
    assert prob.n_classes == 100 and prob.model(prob.data("train")[0][:2]).shape == (2, 100)
    assert prob.data("train")[1].tolist() == written["train"][1]
    x = prob.data("train")[0]
    v = written["train"][0][0][2 * 1024]
    assert x[0, 2, 0, 0].item() == pytest.approx((v / 255 - D.CIFAR100_MEAN[2]) / D.CIFAR100_STD[2], abs=1e-5)
    bad = tmp_path / "evil" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (bad / name).write_bytes(pickle.dumps({b"data": os.getcwd}))     # a callable reference: refused
    with pytest.raises(ValueError, match="refusing to load"):
        D.load_cifar(10, bad)


def test_cifar_missing_names_path_and_layout(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_DATA", raising=False)
    with pytest.raises(ValueError, match="WORKBENCH_DATA") as exc:
        wb.problems.make("cifar-resnet")
    assert "cifar-10-batches-py" in str(exc.value) and "synthetic" in str(exc.value)
    with pytest.raises(ValueError, match="cifar-100-python") as exc:
        wb.problems.make("cifar-vgg", classes=100, data_dir=str(tmp_path))
    assert str(tmp_path) in str(exc.value)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="nowhere"):
        wb.problems.make("cifar-vit")


def test_cifar_synthetic_is_deterministic_learnable_and_cifar_like():
    x, y = D.synthetic_cifar(1500, "train", 10, seed=0)
    x2, y2 = D.synthetic_cifar(1200, "train", 10, seed=0)
    np.testing.assert_array_equal(x[:1200], x2)                         # a prefix does not depend on n
    np.testing.assert_array_equal(y[:1200], y2)
    assert x.dtype == np.uint8 and x.shape == (1500, 3, 32, 32)
    assert not np.array_equal(D.synthetic_cifar(50, "train", 10, seed=1)[0], x[:50])
    assert not np.array_equal(D.synthetic_cifar(50, "test", 10, seed=0)[0], x[:50])
    assert 0.4 < x.mean() / 255 < 0.55 and 0.2 < x.std() / 255 < 0.35    # similar pixel statistics to CIFAR-10
    assert np.bincount(y, minlength=10).min() > 100
    prob = wb.problems.make("cifar-vgg", data="synthetic", n_train=1500, n_test=500, width=0.0625)
    X, Y = prob.data("train")
    np.testing.assert_array_equal(Y.numpy(), y)                        # same generator, same normalisation path
    np.testing.assert_allclose(X[0].numpy(), D.normalize_images(x[:1], D.CIFAR10_MEAN, D.CIFAR10_STD)[0].numpy())
    Xt, Yt = prob.data("test")
    # a ridge-regression linear probe (dual form) on 1500 examples: far above the 10% of chance
    X, Xt = X.flatten(1), Xt.flatten(1)
    T = nn.functional.one_hot(Y, 10).float()
    A = torch.linalg.solve(X @ X.T + 1000.0 * torch.eye(len(X)), T - T.mean(0))
    acc = float(((Xt @ (X.T @ A)).argmax(1) == Yt).float().mean())
    assert acc > 0.3, acc
    # labels are not recoverable from pixel noise alone: shuffled labels give chance level
    Ts = T[torch.randperm(len(T), generator=torch.Generator().manual_seed(0))]
    As = torch.linalg.solve(X @ X.T + 1000.0 * torch.eye(len(X)), Ts - Ts.mean(0))
    assert float(((Xt @ (X.T @ As)).argmax(1) == Yt).float().mean()) < 0.2


# -- MNIST-1D ------------------------------------------------------------------------------------------------------
def test_mnist1d_data():
    d = D.load_mnist1d()
    assert d["x_train"].shape == (4000, 40) and d["x_test"].shape == (1000, 40)
    assert set(np.unique(d["y_train"])) == set(range(10))
    prob = wb.problems.make("mnist1d-cnn", n_train=100, n_test=20)
    x, y = prob.data("train")
    assert x.shape == (100, 40) and x.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), d["y_train"][:100])
    assert abs(float(d["x_train"].mean())) < 0.1 and abs(float(d["x_train"].std()) - 1) < 0.1


def test_mnist1d_generation_restores_global_rng_and_caches_atomically(tmp_path, monkeypatch):
    from mnist1d.data import get_dataset_args
    args = get_dataset_args(as_dict=True)
    args["num_samples"] = 40
    random.seed(5)
    np.random.seed(5)
    before = (random.random(), np.random.random())
    random.seed(5)
    np.random.seed(5)
    a = D._generate_mnist1d(args)
    assert (random.random(), np.random.random()) == before          # make_dataset re-seeds them; we restore
    b = D._generate_mnist1d(args)
    np.testing.assert_array_equal(a["x_train"], b["x_train"])
    assert a["x_train"].shape == (32, 40) and a["x_test"].shape == (8, 40)
    # the disk cache: generated once, then read back; no temporary files left behind
    calls = []
    monkeypatch.setattr(D, "_generate_mnist1d", lambda _args: calls.append(1) or dict(a))
    path = tmp_path / "cache" / "mnist1d-test.npz"
    first = D._mnist1d_arrays.__wrapped__(str(path))
    second = D._mnist1d_arrays.__wrapped__(str(path))
    assert len(calls) == 1 and path.is_file() and os.listdir(path.parent) == [path.name]
    np.testing.assert_array_equal(first["x_test"], second["x_test"])
    path.write_bytes(b"damaged")                                       # a damaged cache is regenerated
    D._mnist1d_arrays.__wrapped__(str(path))
    assert len(calls) == 2


# -- text ----------------------------------------------------------------------------------------------------------
def test_text_corpus_from_stdlib_windows_and_vocab():
    text = D.text_corpus(30_000)
    assert len(text) == 30_000 and text == D.text_corpus(30_000)
    first = D.stdlib_sources()[0].read_text(encoding="utf-8", errors="replace")
    assert text.startswith(first[:1000])
    chars, xtr, ytr, xte, yte = D.char_dataset(text, 64)
    assert chars == sorted(set(text[:27_000]) - {D.UNKNOWN}) + [D.UNKNOWN]
    assert xtr.shape == ((27_000 - 1) // 64, 64) and xte.shape == ((3_000 - 1) // 64, 64)
    assert torch.equal(xtr[:, 1:], ytr[:, :-1]) and torch.equal(xtr[1:, 0], ytr[:-1, -1])
    assert "".join(chars[i] for i in xtr[:3].reshape(-1)) == text[:192]
    assert "".join(chars[i] for i in xte[0]) == text[27_000:27_064]
    prob = wb.problems.make("text-gpt", **TINY["text-gpt"])
    assert prob.n_classes == len(prob.vocab) and prob.model(prob.data("train")[0][:2]).shape == (2, 32, len(prob.vocab))


def test_text_file_option_and_unknown_test_characters(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("abcab" * 180 + "zzzzzzzzzz" * 10, encoding="utf-8")     # 'z' only in the last 10%
    chars, xtr, ytr, xte, yte = D.char_dataset(D.text_corpus(10_000, str(f)), 8)
    assert chars == ["a", "b", "c", D.UNKNOWN]
    assert (xte == 3).all() and xtr.max() < 3
    prob = wb.problems.make("text-gpt", text_file=str(f), block_size=8, n_layer=1, n_head=1, n_embd=8)
    assert prob.vocab == chars and len(prob.train) == (900 - 1) // 8
    with pytest.raises(ValueError, match="text_file"):
        wb.problems.make("text-gpt", text_file=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="block_size"):
        wb.problems.make("text-gpt", text_file=str(f), block_size=2000, n_layer=1, n_head=1, n_embd=8)


# -- bad options ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,opts,field", [
    ("fashion-cnn", dict(n_train=0), "n_train"),
    ("fashion-cnn", dict(n_train=60001), "n_train"),
    ("fashion-cnn", dict(depth=5), "depth"),
    ("fashion-cnn", dict(data_dir=3), "data_dir"),
    ("fashion-resnet", dict(depth=9), "depth"),
    ("cifar-resnet", dict(data="fake"), "data"),
    ("cifar-resnet", dict(classes=20), "classes"),
    ("cifar-vgg", dict(width=0.0), "width"),
    ("cifar-vit", dict(SYN, dim=16, heads=3), "heads"),
    ("cifar-vit", dict(SYN, patch=5), "patch"),
    ("mnist1d-mlp", dict(n_test=1001), "n_test"),
    ("mnist1d-cnn", dict(activation="swish"), "activation"),
    ("text-gpt", dict(n_embd=10, n_head=3, n_chars=5000), "n_head"),
    ("text-gpt", dict(dropout=1.0), "dropout"),
    ("text-gpt", dict(block_size=0), "block_size"),
    ("text-gpt", dict(vocab=10), "vocab"),
])
def test_bad_options_name_the_field(name, opts, field):
    with pytest.raises(ValueError, match=field):
        wb.problems.make(name, **opts)


@settings(max_examples=15, deadline=None)
@given(n=st.one_of(st.integers(-10**6, 0), st.integers(4001, 10**7)))
def test_mnist1d_n_train_out_of_range(n):
    with pytest.raises(ValueError, match="n_train"):
        wb.problems.make("mnist1d-mlp", n_train=n)


# -- info ----------------------------------------------------------------------------------------------------------
def test_info_for_every_problem():
    keys = {"name", "kind", "doc", "n_params", "n_train", "n_test", "data_available", "data_note"}
    for name in wb.problems.list():
        inf = wb.problems.info(name)
        assert set(inf) >= keys, name
        assert isinstance(inf["data_available"], bool) and isinstance(inf["data_note"], str) and inf["data_note"]
        if inf["data_available"]:
            assert inf["n_params"] > 0 and inf["n_train"] >= 1, name
    assert wb.problems.info("fashion-cnn")["n_train"] == 60000
    assert wb.problems.info("mnist1d-mlp")[("n_test")] == 1000
    assert wb.problems.info("cifar-vit", data="synthetic")["data_available"]
    assert wb.problems.info("text-gpt")["n_params"] > 10_000_000        # the 6x384 default, built on the meta device
    with pytest.raises(ValueError, match="depth"):
        wb.problems.info("cifar-resnet", depth=0)


@pytest.mark.parametrize("name", REAL)
def test_info_matches_the_built_problem_without_loading(name):
    D._fashion_arrays.cache_clear()
    inf = wb.problems.info(name, **TINY[name])
    assert D._fashion_arrays.cache_info().currsize == 0                  # info never read the images
    prob = wb.problems.make(name, **TINY[name])
    assert inf["n_params"] == prob.n_params
    assert (inf["n_train"], inf["n_test"]) == (len(prob.train), len(prob.test))
    assert inf["data_available"]


# -- custom problems -----------------------------------------------------------------------------------------------
def _blobs(n=64, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, d, generator=g) + 2.0 * nn.functional.one_hot(y, d).float()
    return x, y


def _net(d=5, c=3, bn=False):
    torch.manual_seed(0)
    layers = [nn.Linear(d, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(), nn.Linear(8, c)]
    return nn.Sequential(*layers)


def test_custom_tensors_train_reproducibly_and_leave_the_model_alone():
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    prob = wb.problems.custom(net, "cross-entropy", _blobs(), test=_blobs(32, seed=1))
    assert prob.metrics.keys() == {"accuracy"} and prob.n_classes == 3 and len(prob.test) == 32
    runs = [wb.train(prob, optimizer="sgd", lr=0.2, steps=15, device="cpu", seed=0, progress=False) for _ in range(2)]
    loss = runs[0].record["loss"].values
    assert loss[-1] < loss[0] - 0.1
    np.testing.assert_array_equal(loss, runs[1].record["loss"].values)
    for p, b in zip(net.parameters(), before):
        assert torch.equal(p, b)                                            # the user's module: untouched
    m1, m2 = prob.new_model(), prob.new_model(seed=7)
    assert m1 is not prob.model and m1 is not net
    for a, b, c in zip(m1.parameters(), m2.parameters(), before):
        assert torch.equal(a, c) and torch.equal(b, c)                      # copies of the given initial state
    with torch.no_grad():
        next(net.parameters()).add_(1.0)                                   # later edits do not leak in
    assert torch.equal(next(prob.new_model().parameters()), before[0])


def test_custom_loss_forms_agree_and_curvature_matches_dense():
    x, y = _blobs(24)
    net = _net().double()
    x = x.double()

    def model_loss(model, batch):
        xb, yb = batch
        return nn.functional.cross_entropy(model(xb), yb)

    acc = {"accuracy": wb.problems.losses.accuracy}
    a = wb.problems.custom(net, nn.CrossEntropyLoss(), (x, y), metrics=acc)  # loss(outputs, targets), a module
    b = wb.problems.custom(net, model_loss, (x, y), metrics=acc)           # loss(model, batch), by its name
    c = wb.problems.custom(net, lambda o, t: nn.functional.cross_entropy(o, t), (x, y))
    assert a.options["loss_form"] == "outputs" and b.options["loss_form"] == "model"
    assert c.options["loss_form"] == "outputs"
    assert b.evaluate(b.model, (x, y))["accuracy"] == pytest.approx(a.evaluate(a.model, (x, y))["accuracy"])
    # Hessian-vector products of all three equal the dense autograd Hessian
    params = list(a.model.parameters())
    shapes = [p.shape for p in params]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def f(flat):
        ps, i = [], 0
        for s in shapes:
            ps.append(flat[i:i + int(np.prod(s))].reshape(s))
            i += int(np.prod(s))
        names = [n for n, _ in a.model.named_parameters()]
        out = torch.func.functional_call(a.model, dict(zip(names, ps)), (x,))
        return nn.functional.cross_entropy(out, y)

    dense = torch.autograd.functional.hessian(f, flat0)
    v = torch.randn(len(flat0), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for prob in (a, b, c):
        H = wb.curvature.hessian(prob.model, prob.loss, (x, y))
        np.testing.assert_allclose(H.matvec(v).numpy(), (dense @ v).numpy(), rtol=1e-9, atol=1e-11)
        top = wb.curvature.eigs(H, k=1, tol=1e-8).values[0]
        assert float(top) == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-6)
    G = wb.curvature.ggn(a.model, a.loss, (x, y))                          # output losses also give the GGN
    assert torch.isfinite(G.matvec(v)).all()
    with pytest.raises(TypeError, match="ggn"):
        wb.curvature.ggn(b.model, b.loss, (x, y))                          # loss(model, batch): no outputs


def test_custom_probes_landscape_and_batchnorm_untouched():
    import landscapes as ls
    prob = wb.problems.custom(_net(bn=True), "ce", _blobs(48), test=_blobs(16, seed=2))
    run = wb.train(prob, optimizer="adam", lr=1e-2, steps=6, batch_size=16, device="cpu", progress=False,
                   probes=[wb.probes.Sharpness(every=3, k=1), wb.probes.Eval(every=3)])
    assert run.status == "finished"
    rec = run.record
    sharp = [v for v in rec.data_vars if "sharp" in v.lower() or "eig" in v.lower()]
    assert sharp and np.isfinite(rec[sharp[0]].values).all()
    model = prob.copy_model()
    model.train()
    bn = model[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    d = ls.directions.random(model, n=2, norm="filter", seed=0)
    surf = ls.surface(model, prob.loss, prob.data(), d, span=0.5, steps=3, progress=False)
    assert surf.shape[-2:] == (3, 3) and np.isfinite(surf.values).all()
    wb.curvature.eigs(wb.curvature.hessian(model, prob.loss, prob.data()), k=1, tol=1e-2)
    assert model.training and int(bn.num_batches_tracked) == stats[2]
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])


class _PairDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_custom_dataloaders_datasets_and_size_cap():
    x, y = _blobs(40)
    loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True)
    p1 = wb.problems.custom(_net(), "ce", loader, seed=0)
    p2 = wb.problems.custom(_net(), "ce", loader, seed=0)
    x1, y1 = p1.data()
    assert x1.shape == (40, 5) and torch.equal(x1, p2.data()[0])           # read in a seeded order
    assert sorted(map(tuple, x1.tolist())) == sorted(map(tuple, x.tolist()))
    p3 = wb.problems.custom(_net(), "ce", _PairDataset(x, y))
    assert torch.equal(p3.data()[0], x) and torch.equal(p3.data()[1], y)
    with pytest.raises(ValueError, match="max_bytes"):
        wb.problems.custom(_net(), "ce", loader, max_bytes=500)
    with pytest.raises(ValueError, match="max_bytes"):
        wb.problems.custom(_net(), "ce", (x, y), max_bytes=100)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(model="not a module"), TypeError, "model"),
    (dict(loss="hinge"), ValueError, "loss"),
    (dict(loss=3), ValueError, "loss"),
    (dict(train=(torch.randn(4, 5), torch.zeros(3, dtype=torch.long))), ValueError, "train"),
    (dict(train=torch.randn(4, 5)), ValueError, "train"),
    (dict(train=(torch.randn(4, 7), torch.zeros(4, dtype=torch.long))), ValueError, "model"),
    (dict(kind="ranking"), ValueError, "kind"),
    (dict(loss_form="both"), ValueError, "loss_form"),
    (dict(loss=lambda o, t: o.sum(-1)), ValueError, "scalar"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_custom_bad_input(kwargs, exc, match):
    args = dict(model=_net(), loss="ce", train=_blobs(8))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        wb.problems.custom(**args)


def test_custom_causal_lm_with_a_workbench_gpt_and_tokens():
    from workbench.problems import nets
    torch.manual_seed(0)
    model = nets.gpt(20, block_size=12, n_layer=1, n_head=2, n_embd=8)
    tokens = torch.randint(0, 20, (16, 9), generator=torch.Generator().manual_seed(0))
    prob = wb.problems.custom(model, "causal-lm", tokens)
    x, y = prob.data()
    assert x.shape == (16, 8) and torch.equal(x[:, 1:], y[:, :-1]) and prob.n_classes == 20
    run = wb.train(prob, optimizer="adam", lr=2e-2, steps=10, device="cpu", progress=False)
    assert run.record["loss"].values[-1] < run.record["loss"].values[0]
    with pytest.raises(ValueError, match="token ids"):
        wb.problems.custom(model, "causal-lm", torch.randn(4, 9))


def test_custom_hugging_face_causal_lm():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=30, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg)
    impl = hf.config._attn_implementation
    tokens = torch.randint(0, 30, (12, 10), generator=torch.Generator().manual_seed(1))
    prob = wb.problems.custom(hf, "causal-lm", tokens, test=tokens[:4])
    assert hf.config._attn_implementation == impl                         # the user's model keeps its setting
    from workbench.problems.custom import OutputAdapter
    assert prob.n_classes == 30 and isinstance(prob.model, OutputAdapter)
    runs = [wb.train(prob, optimizer="adam", lr=1e-2, steps=8, device="cpu", seed=0, progress=False)
            for _ in range(2)]
    loss = runs[0].record["loss"].values
    assert loss[-1] < loss[0]
    np.testing.assert_array_equal(loss, runs[1].record["loss"].values)
    # Hessian-vector products (double backward) in float64 against central differences of the gradient
    model = prob.new_model().double()
    batch = prob.data()
    H = wb.curvature.hessian(model, prob.loss, batch)
    v = torch.randn(H.size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    v /= v.norm()
    hv = H.matvec(v)
    params = [p for p in model.parameters()]

    def grad_at(shift):
        with torch.no_grad():
            i = 0
            for p in params:
                p.add_(shift[i:i + p.numel()].view_as(p))
                i += p.numel()
        model.eval()
        g = torch.autograd.grad(prob.loss(model, batch), params)
        with torch.no_grad():
            i = 0
            for p in params:
                p.sub_(shift[i:i + p.numel()].view_as(p))
                i += p.numel()
        return torch.cat([t.reshape(-1) for t in g])

    eps = 1e-4
    fd = (grad_at(eps * v) - grad_at(-eps * v)) / (2 * eps)
    assert float((hv - fd).norm() / fd.norm()) < 1e-6
    fr = wb.curvature.hessian(model, prob.loss, batch, method="forward-over-reverse").matvec(v)
    assert float((fr - hv).norm() / hv.norm()) < 1e-10
