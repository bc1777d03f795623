"""Training in a random affine subspace: θ = θ₀ + P z (Li, Farkhoor, Liu & Yosinski 2018, *Measuring the
Intrinsic Dimension of Objective Landscapes*, arXiv:1804.08838).

:func:`subspace` turns any model-based :class:`~workbench.problems.Problem` into one whose model has a single
trainable parameter ``z`` (``dim`` entries, initialised to 0) and computes the base model at θ₀ + P z with
``torch.func.functional_call``. θ₀ is the base problem's model as it is when :func:`subspace` is called (a copy;
the base problem is never changed), P is a fixed random n × d matrix (n = the base model's trainable parameters).
Since θ is linear in z, the gradient in z is Pᵀ∇θL and the Hessian in z is Pᵀ H P, so ``wb.train``, the probes
(``Sharpness`` then measures λ_max(Pᵀ H P)), ``wb.curvature`` and ``landscapes`` work on it unchanged.

Projections (all drawn on the CPU from ``seed``, so the same seed gives the same P on every device):

* ``"dense"``: i.i.d. Gaussian entries, every column scaled to unit length (exactly). Memory n·d floats.
* ``"sparse"``: ``nonzeros`` entries ±1/√nonzeros per column at distinct random rows (default ⌈√n⌉, the density
  1/√n of Li, Hastie & Church 2006, "Very sparse random projections"); unit columns exactly. Memory
  d·nonzeros (index + value), a product costs d·nonzeros.
* ``"fastfood"``: the Fastfood transform (Le, Sarlós & Smola 2013), as in Li et al.'s code:
  P z = s · (H G Π H B [z; 0])[:n] with B random signs, H the L × L Walsh-Hadamard matrix
  (L = 2^⌈log₂ n⌉), Π a random permutation, G Gaussian and s = 1/√(n Σ G²). Columns have unit length exactly
  when n is a power of two, otherwise E‖P e_j‖² = 1 (a few % spread). Memory O(L), a product O(L log L).

Columns of a dense Gaussian P with large n are nearly orthogonal, so a step of length r in z moves θ by about r.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import reduce
from typing import Callable

import torch
from torch import nn

from .._validate import check_choice, check_int
from .base import Problem

__all__ = ["subspace", "SubspaceModel", "SubspaceProblem", "Projection", "DenseProjection", "SparseProjection",
           "FastfoodProjection", "make_projection", "PROJECTIONS", "MAX_DENSE_ENTRIES"]

PROJECTIONS = ("dense", "sparse", "fastfood")
#: the largest n·d a dense projection may have (8 GiB of float32); beyond it use "sparse" or "fastfood"
MAX_DENSE_ENTRIES = 2**31


# -- projections -----------------------------------------------------------------------------------------------
class Projection:
    """A fixed linear map P: R^d -> R^n. ``P(z)`` maps ``(..., d) -> (..., n)`` differentiably (reverse and forward
    mode, vmap). Immutable: :meth:`apply` returns a converted copy, and a deep copy shares the tensors."""

    kind = "projection"

    def __init__(self, n: int, d: int, seed: int):
        self.n, self.d, self.seed = int(n), int(d), int(seed)

    # tensors the projection holds (moved/cast together by ``apply``)
    _tensor_names: tuple[str, ...] = ()

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, z: torch.Tensor):
        if z.shape[-1] != self.d:
            raise ValueError(f"z must have {self.d} entries in its last dimension (the subspace dimension); "
                             f"got shape {tuple(z.shape)}")

    def transpose(self, v: torch.Tensor) -> torch.Tensor:
        """Pᵀ v for ``v`` of shape (n,) (exact: the vector-Jacobian product of the linear map)."""
        if v.shape != (self.n,):
            raise ValueError(f"v must have shape ({self.n},); got {tuple(v.shape)}")
        z = torch.zeros(self.d, dtype=v.dtype, device=v.device, requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self(z), z, grad_outputs=v)
        return g

    def dense(self) -> torch.Tensor:
        """P as an (n, d) tensor (materialises n·d entries: for tests and small problems)."""
        eye = torch.eye(self.d, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            return self(eye).T.contiguous()

    def column_norms(self) -> torch.Tensor:
        """‖P e_j‖ for every column j (exact; materialises P unless the projection stores its columns)."""
        return torch.linalg.vector_norm(self.dense(), dim=0)

    @property
    def dtype(self) -> torch.dtype:
        return next(t for t in (getattr(self, k) for k in self._tensor_names) if t.is_floating_point()).dtype

    @property
    def device(self) -> torch.device:
        return getattr(self, self._tensor_names[0]).device

    @property
    def nbytes(self) -> int:
        """Bytes held by the projection's tensors."""
        return sum(getattr(self, k).numel() * getattr(self, k).element_size() for k in self._tensor_names)

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Projection":
        """A copy with ``fn`` applied to every tensor (what ``nn.Module.to/.double/.cuda`` do to a model)."""
        new = copy.copy(self)
        for k in self._tensor_names:
            setattr(new, k, fn(getattr(self, k)))
        return new

    def __deepcopy__(self, memo):
        return self   # immutable: copies of a model share P

    def config(self) -> dict:
        return {"projection": self.kind, "n": self.n, "dim": self.d, "seed": self.seed}

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "projection")
        return f"{type(self).__name__}({extra})"


class DenseProjection(Projection):
    """Gaussian P with every column scaled to unit length (stored transposed, d × n)."""

    kind = "dense"
    _tensor_names = ("Pt",)

    def __init__(self, n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(n, d, seed)
        if n * d > MAX_DENSE_ENTRIES:
            raise ValueError(f"projection='dense' needs n·dim = {n:,}·{d:,} = {n * d:,} entries, more than "
                             f"{MAX_DENSE_ENTRIES:,}; use projection='sparse' or 'fastfood' (memory O(dim·√n) or "
                             "O(n)), or a smaller dim")
        g = torch.Generator().manual_seed(int(seed))
        self.Pt = torch.empty(d, n, dtype=dtype)
        chunk = max(1, (1 << 24) // max(n, 1))
        for i in range(0, d, chunk):                       # float64 normalisation, chunked to bound memory
            rows = torch.randn(min(chunk, d - i), n, generator=g, dtype=torch.float64)
            rows /= torch.linalg.vector_norm(rows, dim=1, keepdim=True)
            self.Pt[i:i + rows.shape[0]] = rows.to(dtype)

    def __call__(self, z):
        self._check(z)
        return z @ self.Pt

    def dense(self):
        return self.Pt.T.contiguous()


class SparseProjection(Projection):
    """``nonzeros`` entries ±1/√nonzeros per column, at distinct random rows (exactly unit columns)."""

    kind = "sparse"
    _tensor_names = ("rows", "vals")

    def __init__(self, n: int, d: int, seed: int = 0, nonzeros: int | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__(n, d, seed)
        k = min(n, math.ceil(math.sqrt(n))) if nonzeros is None else check_int("nonzeros", nonzeros, 1, n)
        self.k = k
        g = torch.Generator().manual_seed(int(seed))
        if 4 * k > n:            # dense-ish columns: a permutation per column is cheap at this n
            rows = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(d)]).sort(dim=1).values
        else:                    # redraw the (rare) repeated rows of a column until all are distinct
            rows = torch.randint(n, (d, k), generator=g)
            while True:
                rows = rows.sort(dim=1).values
                dup = torch.zeros_like(rows, dtype=torch.bool)
                dup[:, 1:] = rows[:, 1:] == rows[:, :-1]
                m = int(dup.sum())
                if m == 0:
                    break
                rows[dup] = torch.randint(n, (m,), generator=g)
        signs = torch.randint(2, (d, k), generator=g, dtype=torch.int64) * 2 - 1
        self.rows = rows.reshape(-1).contiguous()                       # column j owns entries j*k .. j*k+k-1
        self.vals = (signs.to(torch.float64) / math.sqrt(k)).to(dtype).reshape(d, k)

    def __call__(self, z):
        self._check(z)
        src = (z.unsqueeze(-1) * self.vals).reshape(*z.shape[:-1], self.d * self.k)
        return z.new_zeros(*z.shape[:-1], self.n).index_add(-1, self.rows, src)

    def column_norms(self):
        return torch.linalg.vector_norm(self.vals, dim=1)   # rows are distinct within a column

    def config(self):
        return {**super().config(), "nonzeros": self.k}


def _hadamard_factors(L: int, dtype) -> list[torch.Tensor]:
    """Sylvester Hadamard matrices whose Kronecker product is H_L (entries ±1), each at most 64 × 64."""
    bits = L.bit_length() - 1
    r = max(1, math.ceil(bits / 6))
    sizes = [bits // r + (1 if i < bits % r else 0) for i in range(r)]
    out = []
    for b in sizes:
        f = 1 << b
        i = torch.arange(f)
        parity = torch.zeros(f, f, dtype=torch.int64)
        x = i[:, None] & i[None, :]
        for _ in range(b):
            parity ^= x & 1
            x = x >> 1
        out.append((1 - 2 * parity).to(dtype))
    return out


def _fwht(x: torch.Tensor, factors) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform along the last dimension (length L = product of factor sizes).

    H_L = H_f1 ⊗ ... ⊗ H_fr: view x as (N, f1, ..., fr), multiply the last axis by its (symmetric) factor in one
    GEMM and rotate that axis to the front; after r rounds every axis is transformed and back in place. Measured
    on one CPU core: faster than the log₂ L add/subtract butterfly passes, and than per-axis batched matmuls.
    """
    lead, L = x.shape[:-1], x.shape[-1]
    sizes = [h.shape[0] for h in factors]
    x = x.reshape(-1, *sizes)
    N = x.shape[0]
    for H in reversed(factors):
        f = H.shape[0]
        x = (x.reshape(-1, f) @ H).reshape(N, -1, f).transpose(1, 2)
    return x.reshape(*lead, L)


class FastfoodProjection(Projection):
    """P z = s · (H G Π H B [z; 0])[:n], L = 2^⌈log₂ n⌉, s = 1/√(n Σ G²) (so that E‖P e_j‖² = 1; exact when
    n = L). Memory O(L); a product costs two Walsh-Hadamard transforms of length L."""

    kind = "fastfood"
    _tensor_names = ("B", "G", "perm", "scale")

    def __init__(self, n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(n, d, seed)
        L = 1 << max(0, (n - 1).bit_length())
        self.L = L
        g = torch.Generator().manual_seed(int(seed))
        self.B = (torch.randint(2, (L,), generator=g) * 2 - 1).to(dtype)
        self.perm = torch.randperm(L, generator=g)
        G = torch.randn(L, generator=g, dtype=torch.float64)
        self.G = G.to(dtype)
        self.scale = torch.tensor(1.0 / math.sqrt(n * float((G ** 2).sum())), dtype=dtype)
        self._factors = _hadamard_factors(L, dtype)

    def apply(self, fn):
        new = super().apply(fn)
        new._factors = [fn(h) for h in self._factors]
        return new

    @property
    def nbytes(self):
        return super().nbytes + sum(h.numel() * h.element_size() for h in self._factors)

    def __call__(self, z):
        self._check(z)
        x = torch.nn.functional.pad(z, (0, self.L - self.d)) * self.B
        x = _fwht(x, self._factors)[..., self.perm] * self.G
        return _fwht(x, self._factors)[..., :self.n] * self.scale


def make_projection(kind: str, n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                    nonzeros: int | None = None) -> Projection:
    """A random projection R^d -> R^n of ``kind`` "dense" | "sparse" | "fastfood" (see the module table)."""
    check_choice("projection", kind, PROJECTIONS)
    n = check_int("n", n, 1, None)
    d = check_int("dim", d, 1, n)
    seed = check_int("seed", seed, 0, 2**31 - 1)
    if nonzeros is not None and kind != "sparse":
        raise ValueError(f"nonzeros applies only to projection='sparse'; got projection={kind!r}")
    if kind == "dense":
        return DenseProjection(n, d, seed, dtype)
    if kind == "sparse":
        return SparseProjection(n, d, seed, nonzeros, dtype)
    return FastfoodProjection(n, d, seed, dtype)


# -- the reparametrised model ----------------------------------------------------------------------------------
def _resolve(module: nn.Module, name: str):
    return reduce(getattr, name.split("."), module)


class SubspaceModel(nn.Module):
    """``base`` evaluated at θ₀ + P z, with ``z`` (``projection.d`` entries, initialised to 0) its only parameter.

    The base model's parameters become buffers of ``self.base`` holding θ₀ (frozen ones stay fixed and are not in
    the subspace); its own buffers (BatchNorm statistics) stay buffers, and train/eval mode is passed through.
    θ is ordered like ``base.parameters()`` (trainable ones). ``.to()``, ``.double()`` etc. also convert P.
    """

    def __init__(self, base: nn.Module, projection: Projection):
        super().__init__()
        if not isinstance(base, nn.Module):
            raise TypeError(f"base must be a torch.nn.Module; got {type(base).__name__}")
        if not isinstance(projection, Projection):
            raise TypeError(f"projection must be a Projection (make_projection); got {type(projection).__name__}")
        base = copy.deepcopy(base)
        slots: dict[int, dict] = {}
        for name, p in base.named_parameters(remove_duplicate=False):
            slot = slots.setdefault(id(p), {"names": [], "shape": tuple(p.shape), "numel": p.numel(),
                                            "trainable": p.requires_grad, "param": p})
            slot["names"].append(name)
        n = sum(s["numel"] for s in slots.values() if s["trainable"])
        if n == 0:
            raise ValueError("base model has no trainable parameters (none with requires_grad=True)")
        if projection.n != n:
            raise ValueError(f"projection maps to {projection.n} entries but the base model has {n} trainable "
                             "parameters")
        for slot in slots.values():            # parameters -> buffers holding θ₀ (tied ones stay tied)
            value = slot.pop("param").detach().clone()
            for name in slot["names"]:
                mod_name, _, attr = name.rpartition(".")
                mod = base.get_submodule(mod_name) if mod_name else base
                del mod._parameters[attr]
                mod.register_buffer(attr, value)
        self.base = base
        self._slots = list(slots.values())
        self.n = n
        self.projection = projection
        ref = _resolve(base, next(s for s in self._slots if s["trainable"])["names"][0])
        self.z = nn.Parameter(torch.zeros(projection.d, dtype=ref.dtype, device=ref.device))

    @property
    def dim(self) -> int:
        return self.projection.d

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.projection = self.projection.apply(fn)
        return self

    def _params(self, delta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, o = {}, 0
        for slot in self._slots:
            if not slot["trainable"]:
                continue
            t = _resolve(self.base, slot["names"][0]) + delta[o:o + slot["numel"]].reshape(slot["shape"])
            o += slot["numel"]
            for name in slot["names"]:
                out[name] = t
        return out

    def forward(self, *args, **kwargs):
        delta = self.projection(self.z)
        return torch.func.functional_call(self.base, self._params(delta), args, kwargs)

    def theta0(self) -> torch.Tensor:
        """θ₀, the base parameters at z = 0 (flattened trainable parameters in ``base.parameters()`` order)."""
        return torch.cat([_resolve(self.base, s["names"][0]).reshape(-1) for s in self._slots if s["trainable"]])

    def theta(self) -> torch.Tensor:
        """θ₀ + P z (differentiable in z), flattened like :meth:`theta0`."""
        return self.theta0() + self.projection(self.z)

    def to_base(self) -> nn.Module:
        """A copy of the base architecture with ordinary parameters set to θ₀ + P z (detached)."""
        model = copy.deepcopy(self.base)
        with torch.no_grad():
            params = self._params(self.projection(self.z.detach()))
            made: dict[int, nn.Parameter] = {}
            for slot in self._slots:
                value = params.get(slot["names"][0], _resolve(model, slot["names"][0]))
                key = id(slot)
                for name in slot["names"]:
                    mod_name, _, attr = name.rpartition(".")
                    mod = model.get_submodule(mod_name) if mod_name else model
                    del mod._buffers[attr]
                    if key not in made:
                        made[key] = nn.Parameter(value.detach().clone(), requires_grad=slot["trainable"])
                    mod.register_parameter(attr, made[key])
        return model

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n={self.n}, projection={self.projection!r}"


# -- the problem -----------------------------------------------------------------------------------------------
@dataclass(repr=False)
class SubspaceProblem(Problem):
    """A :class:`Problem` whose model is a :class:`SubspaceModel` of ``base_problem``'s model.

    ``new_model()`` (or ``seed=None``) uses θ₀ = the base model captured by :func:`subspace`; ``new_model(seed=s)``
    uses θ₀ = ``base_problem.new_model(s)`` with the same P.
    """

    base_problem: Problem | None = None
    base_model: nn.Module | None = None
    projection: Projection | None = None

    def new_model(self, seed: int | None = None) -> nn.Module:
        base = self.base_model if seed is None else self.base_problem.new_model(seed)
        return SubspaceModel(base, self.projection)

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        return self.base_problem.loss(model, batch)

    def evaluate(self, model: nn.Module, batch) -> dict[str, float]:
        return self.base_problem.evaluate(model, batch)

    def config(self) -> dict:
        return {**super().config(), "base": self.base_problem.config(), "subspace": self.projection.config()}

    def __repr__(self) -> str:
        return (f"SubspaceProblem(base={self.base_problem!r}, dim={self.projection.d}, "
                f"projection={self.projection.kind!r}, seed={self.projection.seed})")


def subspace(problem: Problem, dim: int, projection: str = "dense", seed: int = 0,
             nonzeros: int | None = None) -> SubspaceProblem:
    """``problem`` reparametrised as θ = θ₀ + P z in a random ``dim``-dimensional affine subspace.

    θ₀ is a copy of ``problem.model`` now (the problem itself is not changed); P (n × dim, n = the model's trainable
    parameters) is drawn from ``seed`` as ``projection`` = "dense" (Gaussian, unit columns), "sparse" (``nonzeros``
    ±1/√nonzeros entries per column, default ⌈√n⌉) or "fastfood" (structured, O(n) memory and O(n log n) time; use
    it when n·dim floats do not fit). The returned problem shares the data, loss and metrics; its model's only
    parameter is ``z`` (``dim`` entries, zero at the start). Li et al. (2018) call the smallest ``dim`` reaching
    90% of the full model's performance the intrinsic dimension d₉₀.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a workbench Problem (from wb.problems.make); got {type(problem).__name__}")
    if problem.kind == "function":
        raise ValueError(f"problem {problem.name!r} is a 2D test function (kind 'function'); subspace needs a "
                         "model-based problem (classification or regression)")
    check_choice("projection", projection, PROJECTIONS)
    n = sum(p.numel() for p in problem.model.parameters() if p.requires_grad)
    try:
        dim = check_int("dim", dim, 1, n)
    except ValueError as exc:
        raise ValueError(f"{exc} (the number of trainable parameters of problem {problem.name!r})") from None
    seed = check_int("seed", seed, 0, 2**31 - 1)
    dtype = next(p for p in problem.model.parameters() if p.requires_grad).dtype
    P = make_projection(projection, n, dim, seed=seed, dtype=dtype, nonzeros=nonzeros)
    base_model = copy.deepcopy(problem.model)
    doc = (f"{problem.name} trained in a random {dim}-dimensional affine subspace θ = θ₀ + P z of its {n:,} "
           f"parameters ({projection} projection, seed {seed}; Li et al. 2018)."
           + (f" {problem.doc}" if problem.doc else ""))
    options = {**problem.options, "subspace_dim": dim, "projection": projection, "projection_seed": seed}
    if projection == "sparse":
        options["nonzeros"] = P.k
    return SubspaceProblem(name=f"{problem.name}-subspace", kind=problem.kind, model_factory=lambda: None,
                           loss_fn=problem.loss_fn, train=problem.train, test=problem.test,
                           metrics=dict(problem.metrics), options=options, seed=problem.seed,
                           n_classes=problem.n_classes, doc=doc, base_problem=problem, base_model=base_model,
                           projection=P)
