"""Real models on real (offline) data: Fashion-MNIST, CIFAR-10/100 (or generated CIFAR-shaped images), MNIST-1D and
a character-level text corpus, with the model zoo of :mod:`workbench.problems.nets`.

Registered problems (all ``kind="classification"`` with an ``accuracy`` metric):

==================  ==========================================================================================
``fashion-cnn``     Fashion-MNIST, small conv net (``width``, ``depth``, ``activation``)
``fashion-resnet``  Fashion-MNIST, CIFAR ResNet (``depth`` 6n+2, ``width``, ``batchnorm``, ``skip``)
``cifar-resnet``    CIFAR-10/100 (``classes``) or ``data="synthetic"``, CIFAR ResNet
``cifar-vgg``       CIFAR, VGG-11 with or without BatchNorm
``cifar-vit``       CIFAR, small vision transformer (``patch``, ``dim``, ``depth``, ``heads``, ...)
``mnist1d-mlp``     MNIST-1D (generated locally), MLP
``mnist1d-cnn``     MNIST-1D, 1D conv net
``text-gpt``        character-level next-token prediction with a nanoGPT decoder (default 6 layers x 384, block
                    256) on the Python standard library sources or ``text_file``
==================  ==========================================================================================

``n_train`` / ``n_test`` (default ``None``: the whole split) take the *first* examples of each split, so a
smaller problem is a prefix of the larger one. Only ``seed`` initialises the model; the data do not depend on it
(``data_seed`` picks the generated CIFAR-shaped set). The raw arrays are cached per process, so ``make`` slices
and normalises only what it keeps.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..params import Param
from . import data as D
from . import losses, nets
from .base import Problem
from .models import ACTIVATIONS, mlp

__all__ = ["PROBLEMS"]

ACT = tuple(ACTIVATIONS)
N_MAX = 10_000_000


# -- option specs --------------------------------------------------------------------------------------------------
def _sizes(train_note: str, test_note: str) -> list[Param]:
    return [Param("n_train", None, kind="int", low=1, high=N_MAX, log=True, allow_none=True,
                  doc=f"training examples: the first n of the training split (None: all, {train_note})"),
            Param("n_test", None, kind="int", low=1, high=N_MAX, log=True, allow_none=True,
                  doc=f"test examples: the first n of the test split (None: all, {test_note})")]


DATA_DIR = Param("data_dir", None, kind="str", allow_none=True,
                 doc="folder with the dataset (or its parent); None: the WORKBENCH_DATA environment variable, "
                     "then the default location")
LOSS = Param("loss", "ce", kind="choice", choices=("ce", "mse"),
             doc="cross-entropy, or squared error against one-hot targets (Cohen et al. 2021's MSE setups)")
CIFAR_DATA = [Param("data", "real", kind="choice", choices=("real", "synthetic"),
                    doc="real CIFAR from data_dir / WORKBENCH_DATA, or generated CIFAR-shaped class-conditional "
                        "images (no files needed)"),
              Param("classes", 10, kind="choice", choices=(10, 100), doc="CIFAR-10 or CIFAR-100"),
              Param("data_seed", 0, kind="int", low=0, high=2**31 - 1,
                    doc="seed of the generated images (data='synthetic' only)"),
              DATA_DIR]


def _resnet_params(depth=20):
    return [Param("depth", depth, kind="int", low=8, high=110,
                  doc="ResNet depth 6n+2 (8, 14, 20, 32, 44, 56, 110)"),
            Param("width", 1.0, low=0.0, high=16.0, low_inclusive=False, log=True,
                  doc="channel multiplier of the 16-32-64 stages"),
            Param("batchnorm", True, kind="bool", doc="BatchNorm after every convolution"),
            Param("skip", True, kind="bool", doc="skip connections (off: Li et al. 2018's no-skip nets)")]


FASHION_SIZES = _sizes("60000", "10000")
CIFAR_SIZES = _sizes("50000 real or generated", "10000")
MNIST1D_SIZES = _sizes("4000", "1000")

FASHION_CNN_PARAMS = [Param("width", 32, kind="int", low=1, high=1024, log=True,
                            doc="channels of the first block (doubling per block)"),
                      Param("depth", 2, kind="int", low=1, high=4, doc="conv-activation-pool blocks"),
                      Param("activation", "relu", kind="choice", choices=ACT, doc="activation"),
                      *FASHION_SIZES, LOSS, DATA_DIR]
FASHION_RESNET_PARAMS = [*_resnet_params(), *FASHION_SIZES, LOSS, DATA_DIR]
CIFAR_RESNET_PARAMS = [*_resnet_params(), *CIFAR_SIZES, LOSS, *CIFAR_DATA]
CIFAR_VGG_PARAMS = [Param("batchnorm", False, kind="bool", doc="BatchNorm after every convolution"),
                    Param("width", 1.0, low=0.0, high=16.0, low_inclusive=False, log=True,
                          doc="channel multiplier of VGG-11's 64-128-256-512 channels"),
                    *CIFAR_SIZES, LOSS, *CIFAR_DATA]
CIFAR_VIT_PARAMS = [Param("patch", 4, kind="int", low=1, high=32, doc="patch size (must divide 32)"),
                    Param("dim", 64, kind="int", low=1, high=4096, log=True, doc="embedding dimension"),
                    Param("depth", 2, kind="int", low=0, high=64, doc="transformer blocks"),
                    Param("heads", 4, kind="int", low=1, high=256, doc="attention heads (must divide dim)"),
                    Param("mlp_ratio", 2.0, low=0.0, high=16.0, low_inclusive=False,
                          doc="MLP hidden units per embedding dimension"),
                    Param("dropout", 0.0, low=0.0, high=1.0, high_inclusive=False, doc="dropout probability"),
                    *CIFAR_SIZES, LOSS, *CIFAR_DATA]
MNIST1D_MLP_PARAMS = [Param("width", 100, kind="int", low=1, high=8192, log=True, doc="hidden units per layer"),
                      Param("depth", 2, kind="int", low=0, high=16, doc="hidden layers (0 = linear model)"),
                      Param("activation", "relu", kind="choice", choices=ACT, doc="hidden activation"),
                      *MNIST1D_SIZES, LOSS]
MNIST1D_CNN_PARAMS = [Param("width", 32, kind="int", low=1, high=1024, log=True,
                            doc="channels of the first block (doubling per block)"),
                      Param("depth", 2, kind="int", low=1, high=5, doc="conv-activation-pool blocks"),
                      Param("activation", "relu", kind="choice", choices=ACT, doc="activation"),
                      *MNIST1D_SIZES, LOSS]
TEXT_GPT_PARAMS = [Param("n_layer", 6, kind="int", low=1, high=64, doc="transformer blocks"),
                   Param("n_head", 6, kind="int", low=1, high=64, doc="attention heads (must divide n_embd)"),
                   Param("n_embd", 384, kind="int", low=1, high=8192, log=True, doc="embedding dimension"),
                   Param("block_size", 256, kind="int", low=1, high=8192, log=True,
                         doc="context length T (characters per example)"),
                   Param("dropout", 0.0, low=0.0, high=1.0, high_inclusive=False, doc="dropout probability"),
                   Param("bias", True, kind="bool", doc="biases in the linear layers and LayerNorms"),
                   Param("n_chars", 1_000_000, kind="int", low=2, high=100_000_000, log=True,
                         doc="characters of text read (the last 10% are the test part)"),
                   Param("text_file", None, kind="str", allow_none=True,
                         doc="a UTF-8 text file; None: the Python standard library sources"),
                   *_sizes("every window", "every window")]


# -- shared pieces -------------------------------------------------------------------------------------------------
def _take(name: str, n, available: int, what: str) -> int:
    """Resolve ``n_train`` / ``n_test`` (None = all) against the ``available`` examples."""
    if n is None:
        return available
    if n > available:
        raise ValueError(f"{name}={n} is out of range: {name} must be an integer in [1, {available}] "
                         f"({what} has {available} examples)")
    return n


def _loss(o):
    return (losses.cross_entropy if o.get("loss", "ce") == "ce" else losses.mse_onehot), losses.accuracy


def _image_problem(name, seed, o, xtr, ytr, xte, yte, n_classes, factory, doc):
    loss_fn, acc = _loss(o)
    return Problem(name=name, kind="classification", model_factory=factory, loss_fn=loss_fn,
                   train=TensorDataset(xtr, ytr), test=TensorDataset(xte, yte), metrics={"accuracy": acc},
                   options=dict(o), seed=seed, n_classes=n_classes, doc=doc)


def _labels(y) -> torch.Tensor:
    return torch.from_numpy(np.array(y, dtype=np.int64))          # a copy: the cached arrays are read-only


# -- Fashion-MNIST -------------------------------------------------------------------------------------------------
def _fashion_data(o):
    d = D.load_fashion_mnist(o["data_dir"])
    ntr = _take("n_train", o["n_train"], len(d["y_train"]), "Fashion-MNIST's training split")
    nte = _take("n_test", o["n_test"], len(d["y_test"]), "Fashion-MNIST's test split")
    norm = lambda x: D.normalize_images(x, D.FASHION_MNIST_MEAN, D.FASHION_MNIST_STD)
    return (norm(d["x_train"][:ntr]), _labels(d["y_train"][:ntr]), norm(d["x_test"][:nte]),
            _labels(d["y_test"][:nte]))


def _fashion_cnn_factory(o) -> Callable:
    return lambda: nets.cnn(in_channels=1, n_classes=10, image_size=28, width=o["width"], depth=o["depth"],
                            activation=o["activation"])


def _resnet_factory(o, in_channels, n_classes) -> Callable:
    return lambda: nets.resnet(depth=o["depth"], width=o["width"], batchnorm=o["batchnorm"], skip=o["skip"],
                               in_channels=in_channels, n_classes=n_classes)


FASHION_DOC = ("Fashion-MNIST (Xiao et al. 2017; 28x28 grey clothing images, 10 classes, 60k/10k) from Debian's "
               "dataset-fashion-mnist, normalised with mean 0.2860 / std 0.3530")


def fashion_cnn(seed, **o):
    return _image_problem("fashion-cnn", seed, o, *_fashion_data(o), 10, _fashion_cnn_factory(o),
                          FASHION_DOC + "; a small conv net.")


def fashion_resnet(seed, **o):
    return _image_problem("fashion-resnet", seed, o, *_fashion_data(o), 10, _resnet_factory(o, 1, 10),
                          FASHION_DOC + "; a CIFAR ResNet (He et al. 2016) with one input channel.")


def _fashion_info(factory_of):
    def info(o):
        ok, note = D.fashion_mnist_status(o["data_dir"])
        ntr, nte = D.FASHION_MNIST_SIZES
        return {"model": factory_of(o), "n_train": ntr if o["n_train"] is None else min(o["n_train"], ntr),
                "n_test": nte if o["n_test"] is None else min(o["n_test"], nte), "data_available": ok,
                "data_note": note}
    return info


# -- CIFAR ---------------------------------------------------------------------------------------------------------
def _cifar_data(o):
    classes = o["classes"]
    mean, std = (D.CIFAR10_MEAN, D.CIFAR10_STD) if classes == 10 or o["data"] == "synthetic" else \
        (D.CIFAR100_MEAN, D.CIFAR100_STD)
    if o["data"] == "synthetic":
        ntr = D.CIFAR_SIZES[0] if o["n_train"] is None else o["n_train"]
        nte = D.CIFAR_SIZES[1] if o["n_test"] is None else o["n_test"]
        xtr, ytr = D.synthetic_cifar(ntr, "train", classes, o["data_seed"])
        xte, yte = D.synthetic_cifar(nte, "test", classes, o["data_seed"])
    else:
        d = D.load_cifar(classes, o["data_dir"])
        ntr = _take("n_train", o["n_train"], len(d["y_train"]), f"CIFAR-{classes}'s training split")
        nte = _take("n_test", o["n_test"], len(d["y_test"]), f"CIFAR-{classes}'s test split")
        xtr, ytr, xte, yte = d["x_train"][:ntr], d["y_train"][:ntr], d["x_test"][:nte], d["y_test"][:nte]
    return (D.normalize_images(xtr, mean, std), _labels(ytr), D.normalize_images(xte, mean, std), _labels(yte))


def _cifar_doc(o, model):
    src = (f"generated CIFAR-shaped class-conditional images ({o['classes']} classes, data_seed {o['data_seed']})"
           if o["data"] == "synthetic" else
           f"CIFAR-{o['classes']} (Krizhevsky 2009; 32x32 RGB, 50k/10k) from {o['data_dir'] or 'WORKBENCH_DATA'}")
    return f"{src}, per-channel normalised; {model}."


def _vgg_factory(o):
    return lambda: nets.vgg(batchnorm=o["batchnorm"], in_channels=3, n_classes=o["classes"], image_size=32,
                            width=o["width"])


def _vit_factory(o):
    return lambda: nets.vit(image_size=32, in_channels=3, n_classes=o["classes"], patch=o["patch"], dim=o["dim"],
                            depth=o["depth"], heads=o["heads"], mlp_ratio=o["mlp_ratio"], dropout=o["dropout"])


def cifar_resnet(seed, **o):
    return _image_problem("cifar-resnet", seed, o, *_cifar_data(o), o["classes"],
                          _resnet_factory(o, 3, o["classes"]),
                          _cifar_doc(o, f"ResNet-{o['depth']} (He et al. 2016, option-A shortcuts)"))


def cifar_vgg(seed, **o):
    return _image_problem("cifar-vgg", seed, o, *_cifar_data(o), o["classes"], _vgg_factory(o),
                          _cifar_doc(o, "VGG-11" + (" with BatchNorm" if o["batchnorm"] else "")))


def cifar_vit(seed, **o):
    return _image_problem("cifar-vit", seed, o, *_cifar_data(o), o["classes"], _vit_factory(o),
                          _cifar_doc(o, "a small vision transformer"))


def _cifar_info(factory_of):
    def info(o):
        ntr, nte = D.CIFAR_SIZES
        if o["data"] == "synthetic":
            ok, note = True, "generated on the fly (cifar-synthetic); no files needed"
            ntr = ntr if o["n_train"] is None else o["n_train"]
            nte = nte if o["n_test"] is None else o["n_test"]
        else:
            ok, note = D.cifar_status(o["classes"], o["data_dir"])
            ntr = ntr if o["n_train"] is None else min(o["n_train"], ntr)
            nte = nte if o["n_test"] is None else min(o["n_test"], nte)
        return {"model": factory_of(o), "n_train": ntr, "n_test": nte, "data_available": ok, "data_note": note}
    return info


# -- MNIST-1D ------------------------------------------------------------------------------------------------------
MNIST1D_DOC = ("MNIST-1D (Greydanus 2020): 1D signals of length 40 from 10 digit templates, regenerated locally "
               "by the mnist1d package (4000 train / 1000 test)")


def _mnist1d_data(o):
    d = D.load_mnist1d()
    ntr = _take("n_train", o["n_train"], len(d["y_train"]), "MNIST-1D's training split")
    nte = _take("n_test", o["n_test"], len(d["y_test"]), "MNIST-1D's test split")
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
    return t(d["x_train"][:ntr]), _labels(d["y_train"][:ntr]), t(d["x_test"][:nte]), _labels(d["y_test"][:nte])


def _mnist1d_mlp_factory(o):
    return lambda: mlp(40, 10, [o["width"]] * o["depth"], o["activation"])


def _mnist1d_cnn_factory(o):
    return lambda: nets.cnn1d(in_length=40, n_classes=10, width=o["width"], depth=o["depth"],
                              activation=o["activation"])


def mnist1d_mlp(seed, **o):
    return _image_problem("mnist1d-mlp", seed, o, *_mnist1d_data(o), 10, _mnist1d_mlp_factory(o),
                          MNIST1D_DOC + "; an MLP.")


def mnist1d_cnn(seed, **o):
    return _image_problem("mnist1d-cnn", seed, o, *_mnist1d_data(o), 10, _mnist1d_cnn_factory(o),
                          MNIST1D_DOC + "; a 1D conv net.")


def _mnist1d_info(factory_of):
    def info(o):
        ok, note = D.mnist1d_status()
        ntr, nte = D.MNIST1D_SIZES
        return {"model": factory_of(o), "n_train": ntr if o["n_train"] is None else min(o["n_train"], ntr),
                "n_test": nte if o["n_test"] is None else min(o["n_test"], nte), "data_available": ok,
                "data_note": note}
    return info


# -- text ----------------------------------------------------------------------------------------------------------
def _gpt_factory(o, vocab_size):
    return lambda: nets.gpt(vocab_size, block_size=o["block_size"], n_layer=o["n_layer"], n_head=o["n_head"],
                            n_embd=o["n_embd"], dropout=o["dropout"], bias=o["bias"])


def text_gpt(seed, **o):
    text = D.text_corpus(o["n_chars"], o["text_file"])
    chars, xtr, ytr, xte, yte = D.char_dataset(text, o["block_size"])
    if len(xtr) == 0:
        raise ValueError(f"block_size={o['block_size']} is out of range for {len(text)} characters of text: the "
                         f"training part ({len(text) - round(0.1 * len(text))} characters) must hold at least one "
                         f"window of block_size + 1 characters; lower block_size or raise n_chars")
    ntr = _take("n_train", o["n_train"], len(xtr), "the training part's windows")
    if len(xte) == 0 and o["n_test"] is None:
        test = None                          # the test part is shorter than one window
    else:
        nte = _take("n_test", o["n_test"], len(xte), "the test part's windows")
        test = TensorDataset(xte[:nte], yte[:nte])
    src = o["text_file"] or "the Python standard library sources"
    prob = Problem(name="text-gpt", kind="classification", model_factory=_gpt_factory(o, len(chars)),
                   loss_fn=losses.sequence_cross_entropy, train=TensorDataset(xtr[:ntr], ytr[:ntr]),
                   test=test, metrics={"accuracy": losses.sequence_accuracy},
                   options=dict(o), seed=seed, n_classes=len(chars),
                   doc=f"Character-level language model on {len(text):,} characters of {src} (last 10% = test), "
                       f"{len(chars)} symbols, windows of {o['block_size']} characters; nanoGPT decoder "
                       f"{o['n_layer']}x{o['n_embd']}, loss = mean next-character cross-entropy.")
    prob.vocab = chars
    return prob


def _text_info(o):
    try:
        text = D.text_corpus(o["n_chars"], o["text_file"])
    except ValueError as exc:
        return {"model": None, "n_train": None, "n_test": None, "data_available": False, "data_note": str(exc)}
    chars = D.char_dataset(text, 1)[0]
    ntr, nte = D.char_counts(len(text), o["block_size"])
    src = o["text_file"] or f"the Python standard library sources in {D.stdlib_sources()[0].parent}"
    return {"model": _gpt_factory(o, len(chars)), "n_train": ntr if o["n_train"] is None else min(o["n_train"], ntr),
            "n_test": nte if o["n_test"] is None else min(o["n_test"], nte), "data_available": ntr > 0,
            "data_note": f"{len(text):,} characters of {src} ({len(chars)} symbols)"}


# -- registry entries ----------------------------------------------------------------------------------------------
# name -> (build, option specs, one-line doc, info)
PROBLEMS = {
    "fashion-cnn": (fashion_cnn, FASHION_CNN_PARAMS, "Fashion-MNIST with a small conv net.",
                    _fashion_info(_fashion_cnn_factory)),
    "fashion-resnet": (fashion_resnet, FASHION_RESNET_PARAMS, "Fashion-MNIST with a CIFAR ResNet (ResNet-20).",
                       _fashion_info(lambda o: _resnet_factory(o, 1, 10))),
    "cifar-resnet": (cifar_resnet, CIFAR_RESNET_PARAMS,
                     "CIFAR-10/100 (or data='synthetic') with a CIFAR ResNet (ResNet-20).",
                     _cifar_info(lambda o: _resnet_factory(o, 3, o["classes"]))),
    "cifar-vgg": (cifar_vgg, CIFAR_VGG_PARAMS, "CIFAR-10/100 (or data='synthetic') with VGG-11.",
                  _cifar_info(_vgg_factory)),
    "cifar-vit": (cifar_vit, CIFAR_VIT_PARAMS, "CIFAR-10/100 (or data='synthetic') with a small vision transformer.",
                  _cifar_info(_vit_factory)),
    "mnist1d-mlp": (mnist1d_mlp, MNIST1D_MLP_PARAMS, "MNIST-1D (generated locally) with an MLP.",
                    _mnist1d_info(_mnist1d_mlp_factory)),
    "mnist1d-cnn": (mnist1d_cnn, MNIST1D_CNN_PARAMS, "MNIST-1D (generated locally) with a 1D conv net.",
                    _mnist1d_info(_mnist1d_cnn_factory)),
    "text-gpt": (text_gpt, TEXT_GPT_PARAMS,
                 "Character-level language modelling (Python stdlib sources or a text file) with a nanoGPT decoder.",
                 _text_info),
}
