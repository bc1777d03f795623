"""Synthetic and bundled datasets with MLP models: gaussian mixtures, teacher-student regression, the
TensorFlow-Playground sets (spirals, circles, xor, gauss) and sklearn's handwritten digits."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..params import Param
from . import losses
from .base import Problem, seeded
from .models import ACTIVATIONS, mlp

ACT = list(ACTIVATIONS)


def model_params(width=64, depth=2, activation="tanh"):
    return [Param("width", width, kind="int", low=1, high=8192, log=True, doc="hidden units per layer"),
            Param("depth", depth, kind="int", low=0, high=16, doc="number of hidden layers (0 = linear model)"),
            Param("activation", activation, kind="choice", choices=tuple(ACT), doc="hidden activation")]


def size_params(n_train, n_test, max_n=200_000):
    return [Param("n_train", n_train, kind="int", low=1, high=max_n, log=True, doc="training examples"),
            Param("n_test", n_test, kind="int", low=1, high=max_n, log=True, doc="test examples")]


def _widths(o):
    return [o["width"]] * o["depth"]


def _classification(name, seed, opts, xtr, ytr, xte, yte, n_classes, doc):
    loss = opts.get("loss", "ce")
    in_dim = xtr.shape[1]
    out_dim = n_classes
    loss_fn, acc = (losses.cross_entropy, losses.accuracy) if loss == "ce" else (losses.mse_onehot, losses.accuracy)
    factory = lambda: mlp(in_dim, out_dim, _widths(opts), opts["activation"])
    return Problem(name=name, kind="classification", model_factory=factory, loss_fn=loss_fn,
                   train=TensorDataset(xtr, ytr), test=TensorDataset(xte, yte), metrics={"accuracy": acc},
                   options=dict(opts), seed=seed, n_classes=n_classes, doc=doc)


def _t(x, dtype=torch.float32):
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)


# -- gaussian mixture ----------------------------------------------------------------------------------------------
GMM_PARAMS = [Param("classes", 4, kind="int", low=2, high=100, doc="number of classes C"),
              Param("dim", 16, kind="int", low=1, high=4096, log=True, doc="input dimension"),
              Param("separation", 3.0, low=0.0, high=100.0, doc="typical distance between class means, in noise std"),
              *size_params(512, 512), *model_params(64, 2, "tanh"),
              Param("loss", "ce", kind="choice", choices=("ce", "mse"), doc="cross-entropy or squared error")]


def gaussian_mixture(seed, **o):
    rng = np.random.default_rng(seed)
    C, d = o["classes"], o["dim"]
    u = rng.standard_normal((C, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    means = o["separation"] / math.sqrt(2.0) * u

    def sample(n):
        y = np.arange(n) % C
        rng.shuffle(y)
        return means[y] + rng.standard_normal((n, d)), y

    xtr, ytr = sample(o["n_train"])
    xte, yte = sample(o["n_test"])
    return _classification("gaussian-mixture", seed, o, _t(xtr), _t(ytr, torch.long), _t(xte), _t(yte, torch.long),
                           C, "C isotropic unit-variance Gaussian classes whose means lie `separation` apart.")


# -- teacher-student regression ----------------------------------------------------------------------------------
TS_PARAMS = [Param("dim", 16, kind="int", low=1, high=4096, log=True, doc="input dimension"),
             Param("teacher_width", 8, kind="int", low=0, high=4096, doc="teacher hidden units (0 = linear teacher)"),
             Param("noise", 0.0, low=0.0, high=100.0, doc="label noise standard deviation"),
             *size_params(512, 512), *model_params(32, 1, "tanh")]


def teacher_student(seed, **o):
    rng = np.random.default_rng(seed)
    d = o["dim"]
    teacher = seeded(seed + 7919, lambda: mlp(d, 1, [o["teacher_width"]] if o["teacher_width"] else [],
                                               o["activation"] if o["activation"] != "linear" else "tanh"))
    xtr = _t(rng.standard_normal((o["n_train"], d)))
    xte = _t(rng.standard_normal((o["n_test"], d)))
    with torch.no_grad():
        ytr = teacher(xtr) + o["noise"] * _t(rng.standard_normal((o["n_train"], 1)))
        yte = teacher(xte) + o["noise"] * _t(rng.standard_normal((o["n_test"], 1)))
    factory = lambda: mlp(d, 1, _widths(o), o["activation"])
    return Problem(name="teacher-student", kind="regression", model_factory=factory, loss_fn=losses.mse,
                   train=TensorDataset(xtr, ytr), test=TensorDataset(xte, yte), options=dict(o), seed=seed,
                   doc="Regress a random teacher MLP (or linear map) with a student MLP; loss mean((f - y)^2). "
                       "depth=0 makes the student linear, whose Hessian is 2 [X 1]^T [X 1] / n.")


# -- TensorFlow-Playground sets ------------------------------------------------------------------------------------
PLAYGROUND_PARAMS = [Param("noise", 0.1, low=0.0, high=2.0, doc="input noise (fraction of the data radius)"),
                     *size_params(500, 500), *model_params(16, 2, "tanh"),
                     Param("loss", "bce", kind="choice", choices=("bce", "mse"),
                           doc="logistic loss on one output, or squared error against targets -1/+1")]


def _playground_points(kind, n, noise, rng):
    if kind == "spirals":
        y = np.arange(n) % 2
        t = rng.uniform(0, 1, n)
        r = 5 * t
        ang = 1.75 * t * 2 * np.pi + np.pi * y
        x = np.stack([r * np.sin(ang), r * np.cos(ang)], 1)
    elif kind == "circles":
        y = np.arange(n) % 2
        r = np.where(y == 1, rng.uniform(0, 2.5, n), rng.uniform(3.5, 5.0, n))
        ang = rng.uniform(0, 2 * np.pi, n)
        x = np.stack([r * np.sin(ang), r * np.cos(ang)], 1)
    elif kind == "xor":
        x = rng.uniform(-5, 5, (n, 2))
        x += np.sign(x) * 0.3
        y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    else:  # gauss
        y = np.arange(n) % 2
        x = rng.standard_normal((n, 2)) + np.where(y[:, None] == 1, 2.0, -2.0)
    x = x + noise * 5 * rng.standard_normal((n, 2))
    return x / 5.0, y


def make_playground(kind):
    def build(seed, **o):
        rng = np.random.default_rng(seed)
        xtr, ytr = _playground_points(kind, o["n_train"], o["noise"], rng)
        xte, yte = _playground_points(kind, o["n_test"], o["noise"], rng)
        loss_fn = losses.bce_logits if o["loss"] == "bce" else losses.mse_pm1
        factory = lambda: mlp(2, 1, _widths(o), o["activation"])
        return Problem(name=kind, kind="classification", model_factory=factory, loss_fn=loss_fn,
                       train=TensorDataset(_t(xtr), _t(ytr, torch.long)),
                       test=TensorDataset(_t(xte), _t(yte, torch.long)),
                       metrics={"accuracy": losses.binary_accuracy}, options=dict(o), seed=seed, n_classes=2,
                       doc=f"TensorFlow-Playground '{kind}' set: 2D inputs, binary labels, one output.")
    return build


# -- sklearn digits ----------------------------------------------------------------------------------------------
DIGITS_PARAMS = [Param("n_train", 1437, kind="int", low=10, high=1437, log=True,
                       doc="training examples (of 1437; the other 360 are the test set)"),
                 *model_params(200, 2, "tanh"),
                 Param("loss", "ce", kind="choice", choices=("ce", "mse"),
                       doc="cross-entropy, or squared error against one-hot targets (edge-of-stability setups)")]


def digits_mlp(seed, **o):
    from sklearn.datasets import load_digits

    X, Y = load_digits(return_X_y=True)
    X = X.astype(np.float32) / 16.0
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):                          # stratified 20% test split
        idx = np.flatnonzero(Y == c)
        test_idx.extend(rng.permutation(idx)[: int(round(0.2 * len(idx)))])
    test_mask = np.zeros(len(Y), bool)
    test_mask[np.array(test_idx)] = True
    tr = rng.permutation(np.flatnonzero(~test_mask))[: o["n_train"]]
    te = np.flatnonzero(test_mask)
    return _classification("digits-mlp", seed, o, _t(X[tr]), _t(Y[tr], torch.long), _t(X[te]),
                           _t(Y[te], torch.long), 10,
                           "sklearn's 8x8 handwritten digits (1797 images, 10 classes), pixels scaled to [0, 1].")
