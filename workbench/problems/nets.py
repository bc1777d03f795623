"""The model zoo for real problems: conv nets, CIFAR ResNets, VGG-11, a vision transformer and a nanoGPT decoder.

Every factory returns a plain ``nn.Module`` initialised with torch's *global* RNG (PyTorch's default
initialisation unless the paper's is stated), so :func:`workbench.problems.base.seeded` makes it deterministic::

    model = seeded(0, lambda: resnet(depth=20, width=1.0))

All models work in float64 (``.double()``), under ``torch.func.functional_call`` and ``vmap``, and are twice
differentiable (Hessian-vector products by double backward and by forward-over-reverse ``jvp(grad)``); the conv
nets also run in ``torch.channels_last`` memory format. Dropout follows ``train()`` / ``eval()``.

Attention is the explicit ``softmax(Q K^T / sqrt(d) + mask) V`` by default, because PyTorch's fused
scaled-dot-product kernels (flash / memory-efficient, and the CPU flash kernel) have no double backward.
:func:`set_fused_attention` switches a model to ``F.scaled_dot_product_attention`` for training speed only; use
the explicit path (the default) for any curvature computation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_bool, check_choice, check_float, check_int
from .models import ACTIVATIONS

__all__ = ["cnn", "cnn1d", "resnet", "vgg", "vit", "gpt", "SelfAttention", "set_fused_attention",
           "VGG11_CONFIG", "RESNET_STAGES"]

VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
RESNET_STAGES = (16, 32, 64)


def _scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded half up, at least 1."""
    return max(1, int(math.floor(channels * width + 0.5)))


def _check_activation(activation):
    return check_choice("activation", activation, list(ACTIVATIONS))


# -- conv nets ---------------------------------------------------------------------------------------------------
def cnn(in_channels: int = 1, n_classes: int = 10, image_size: int = 28, width: int = 32, depth: int = 2,
        activation: str = "relu") -> nn.Sequential:
    """A small conv net: ``depth`` blocks of conv(3x3, padding 1) - activation - maxpool(2), with ``width``,
    ``2 width``, ``4 width``, ... channels, then a linear head on the flattened features.

    Input ``(N, in_channels, image_size, image_size)``; output ``(N, n_classes)`` logits. ``depth`` is limited so
    that the feature map keeps at least 1x1 pixels (``image_size // 2**depth >= 1``). PyTorch default init.
    """
    in_channels = check_int("in_channels", in_channels, 1)
    n_classes = check_int("n_classes", n_classes, 1)
    image_size = check_int("image_size", image_size, 1)
    width = check_int("width", width, 1, 4096)
    depth = check_int("depth", depth, 1, 16)
    _check_activation(activation)
    if image_size >> depth < 1:
        raise ValueError(f"depth={depth} is out of range for image_size={image_size}: each block halves the image, "
                         f"so depth must be in [1, {int(math.log2(image_size))}] (image_size // 2**depth >= 1)")
    layers: list[nn.Module] = []
    prev, size = in_channels, image_size
    for i in range(depth):
        ch = width * 2 ** i
        layers += [nn.Conv2d(prev, ch, 3, padding=1), ACTIVATIONS[activation](), nn.MaxPool2d(2)]
        prev, size = ch, size // 2
    layers += [nn.Flatten(), nn.Linear(prev * size * size, n_classes)]
    return nn.Sequential(*layers)


class _AddChannel(nn.Module):
    """``(N, L) -> (N, 1, L)``; ``(N, 1, L)`` passes through."""

    def forward(self, x):
        if x.dim() == 2:
            return x.unsqueeze(1)
        if x.dim() == 3 and x.shape[1] == 1:
            return x
        raise ValueError(f"cnn1d input must have shape (N, L) or (N, 1, L); got {tuple(x.shape)}")


def cnn1d(in_length: int = 40, n_classes: int = 10, width: int = 32, depth: int = 2,
          activation: str = "relu") -> nn.Sequential:
    """A 1D conv net for MNIST-1D: ``depth`` blocks of conv1d(k=3, padding 1) - activation - maxpool(2) with
    ``width``, ``2 width``, ... channels, then a linear head. Input ``(N, L)`` or ``(N, 1, L)`` with
    ``L = in_length``; output ``(N, n_classes)``. PyTorch default init."""
    in_length = check_int("in_length", in_length, 1)
    n_classes = check_int("n_classes", n_classes, 1)
    width = check_int("width", width, 1, 4096)
    depth = check_int("depth", depth, 1, 16)
    _check_activation(activation)
    if in_length >> depth < 1:
        raise ValueError(f"depth={depth} is out of range for in_length={in_length}: each block halves the length, "
                         f"so depth must be in [1, {int(math.log2(in_length))}] (in_length // 2**depth >= 1)")
    layers: list[nn.Module] = [_AddChannel()]
    prev, length = 1, in_length
    for i in range(depth):
        ch = width * 2 ** i
        layers += [nn.Conv1d(prev, ch, 3, padding=1), ACTIVATIONS[activation](), nn.MaxPool1d(2)]
        prev, length = ch, length // 2
    layers += [nn.Flatten(), nn.Linear(prev * length, n_classes)]
    return nn.Sequential(*layers)


# -- ResNet ------------------------------------------------------------------------------------------------------
class _PadShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_ch - self.in_ch
        if extra > 0:
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_ch}->{self.out_ch}, stride={self.stride}, zero-padded (option A)"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (He et al. 2016)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, batchnorm: bool, skip: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(out_ch) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(out_ch) if batchnorm else nn.Identity()
        self.skip = skip
        if skip and (stride != 1 or in_ch != out_ch):
            self.shortcut = _PadShortcut(in_ch, out_ch, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.skip:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, n_blocks: int, widths: tuple[int, int, int], batchnorm: bool, skip: bool, in_channels: int,
                 n_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(widths[0]) if batchnorm else nn.Identity()
        stages = []
        prev = widths[0]
        for s, ch in enumerate(widths):
            blocks = []
            for b in range(n_blocks):
                blocks.append(BasicBlock(prev, ch, 2 if (s > 0 and b == 0) else 1, batchnorm, skip))
                prev = ch
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(prev, n_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"resnet input must have shape (N, C, H, W); got {tuple(x.shape)}")
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(out.mean(dim=(2, 3)))


def resnet(depth: int = 20, width: float = 1.0, batchnorm: bool = True, skip: bool = True, in_channels: int = 3,
           n_classes: int = 10) -> ResNet:
    """The CIFAR ResNet of He et al. 2016 (ResNet-20/32/44/56/110: ``depth = 6 n + 2``).

    A 3x3 conv stem, three stages of ``n`` basic blocks with ``16, 32, 64`` channels times ``width`` (rounded,
    at least 1; the second and third stage start with stride 2), global average pooling and a linear head.
    Shortcuts are the paper's CIFAR **option A**: identity, or a stride-2 subsample with zero-padded extra
    channels where the shape changes (parameter-free, so ``skip`` on/off have the same parameters).
    ``batchnorm=False`` removes every BatchNorm (the convolutions get biases); ``skip=False`` removes every
    shortcut (Li et al. 2018's "no skip connections" landscapes). Init: He (Kaiming) normal, fan-in, zero biases,
    BatchNorm weight 1 / bias 0. Input ``(N, in_channels, H, W)`` of any size >= 1 pixel.
    """
    depth = check_int("depth", depth, 8, 1202)
    if (depth - 2) % 6:
        raise ValueError(f"depth={depth} is not accepted: resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...)")
    width = check_float("width", width, 0.0, 64.0, low_inclusive=False)
    batchnorm = check_bool("batchnorm", batchnorm)
    skip = check_bool("skip", skip)
    in_channels = check_int("in_channels", in_channels, 1)
    n_classes = check_int("n_classes", n_classes, 1)
    widths = tuple(_scaled(c, width) for c in RESNET_STAGES)
    return ResNet((depth - 2) // 6, widths, batchnorm, skip, in_channels, n_classes)


# -- VGG ---------------------------------------------------------------------------------------------------------
def vgg(batchnorm: bool = False, in_channels: int = 3, n_classes: int = 10, image_size: int = 32,
        width: float = 1.0) -> nn.Sequential:
    """VGG-11 for small images (64-M-128-M-256-256-M-512-512-M-512-512-M, channels times ``width``), then one
    linear layer, as in the CIFAR VGGs of Cohen et al. 2021.

    Each conv is 3x3 with padding 1, followed by BatchNorm (``batchnorm=True``; the conv then has no bias) and
    ReLU. A max-pool (2x2) is applied only while the feature map is at least 2x2, so small images do not
    collapse to 0x0: 32 -> 16-8-4-2-1, 28 (Fashion-MNIST) -> 14-7-3-1 (last pool skipped). PyTorch default init.
    """
    batchnorm = check_bool("batchnorm", batchnorm)
    in_channels = check_int("in_channels", in_channels, 1)
    n_classes = check_int("n_classes", n_classes, 1)
    image_size = check_int("image_size", image_size, 1)
    width = check_float("width", width, 0.0, 64.0, low_inclusive=False)
    layers: list[nn.Module] = []
    prev, size = in_channels, image_size
    for item in VGG11_CONFIG:
        if item == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        ch = _scaled(item, width)
        layers.append(nn.Conv2d(prev, ch, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(ch))
        layers.append(nn.ReLU())
        prev = ch
    layers += [nn.Flatten(), nn.Linear(prev * size * size, n_classes)]
    return nn.Sequential(*layers)


# -- attention ---------------------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention with an explicit ``softmax(Q K^T / sqrt(d) + mask) V`` (twice differentiable).

    ``causal=True`` masks future positions. ``fused=True`` (attribute, off by default) uses
    ``F.scaled_dot_product_attention`` instead: faster for training, but its fused kernels have no double
    backward, so keep it off for Hessian-vector products.
    """

    def __init__(self, dim: int, heads: int, causal: bool = False, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} must divide the embedding dimension {dim}")
        self.dim, self.heads, self.causal, self.dropout = dim, heads, causal, dropout
        self.c_attn = nn.Linear(dim, 3 * dim, bias=bias)
        self.c_proj = nn.Linear(dim, dim, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.fused = False

    def forward(self, x):
        B, T, C = x.shape
        h = self.heads
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.reshape(B, T, h, C // h).transpose(1, 2)               # (B, h, T, d)
        k = k.reshape(B, T, h, C // h).transpose(1, 2)
        v = v.reshape(B, T, h, C // h).transpose(1, 2)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=self.causal)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // h))
            if self.causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
                att = att.masked_fill(mask, float("-inf"))
            att = self.attn_dropout(torch.softmax(att, dim=-1))
            y = att @ v
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, causal={self.causal}, fused={self.fused}"


def set_fused_attention(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every :class:`SelfAttention` in ``model`` to (or from) ``F.scaled_dot_product_attention``.

    For training speed only: the fused kernels do not support double backward, so curvature needs
    ``enabled=False`` (the default state of every model). Returns ``model``.
    """
    enabled = check_bool("enabled", enabled)
    for m in model.modules():
        if isinstance(m, SelfAttention):
            m.fused = enabled
    return model


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))`` with a GELU MLP."""

    def __init__(self, dim: int, heads: int, hidden: int, causal: bool, dropout: float, bias: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, bias=bias)
        self.attn = SelfAttention(dim, heads, causal, dropout, bias)
        self.ln_2 = nn.LayerNorm(dim, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, dim, bias=bias),
                                 nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


# -- ViT ---------------------------------------------------------------------------------------------------------
class ViT(nn.Module):
    def __init__(self, image_size, in_channels, n_classes, patch, dim, depth, heads, hidden, dropout):
        super().__init__()
        self.image_size, self.in_channels, self.patch = image_size, in_channels, patch
        n_patches = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden, False, dropout) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x):
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"vit input must have shape (N, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}); got {tuple(x.shape)}")
        t = self.patch_embed(x).flatten(2).transpose(1, 2)            # (N, patches, dim)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.blocks(self.drop(t + self.pos_embed))
        return self.head(self.ln_f(t[:, 0]))


def vit(image_size: int = 32, in_channels: int = 3, n_classes: int = 10, patch: int = 4, dim: int = 64,
        depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0) -> ViT:
    """A small vision transformer (Dosovitskiy et al. 2021): a conv patch embedding (kernel = stride = ``patch``),
    a class token, learned position embeddings, ``depth`` pre-LN blocks (``heads`` heads, GELU MLP of
    ``round(mlp_ratio * dim)`` units), a final LayerNorm and a linear head on the class token. ``image_size``
    must be a multiple of ``patch`` and ``heads`` must divide ``dim``. Position embeddings and the class token
    are truncated-normal (std 0.02); everything else PyTorch default init. Input ``(N, C, image_size, image_size)``.
    """
    image_size = check_int("image_size", image_size, 1)
    in_channels = check_int("in_channels", in_channels, 1)
    n_classes = check_int("n_classes", n_classes, 1)
    patch = check_int("patch", patch, 1, image_size)
    if image_size % patch:
        raise ValueError(f"patch={patch} is not accepted: patch must divide image_size={image_size}")
    dim = check_int("dim", dim, 1)
    depth = check_int("depth", depth, 0, 256)
    heads = check_int("heads", heads, 1, dim)
    if dim % heads:
        raise ValueError(f"heads={heads} is not accepted: heads must divide dim={dim}")
    mlp_ratio = check_float("mlp_ratio", mlp_ratio, 0.0, 64.0, low_inclusive=False)
    dropout = check_float("dropout", dropout, 0.0, 1.0, high_inclusive=False)
    hidden = max(1, int(math.floor(mlp_ratio * dim + 0.5)))
    return ViT(image_size, in_channels, n_classes, patch, dim, depth, heads, hidden, dropout)


# -- GPT ---------------------------------------------------------------------------------------------------------
class GPT(nn.Module):
    """nanoGPT (Karpathy): token + position embeddings, pre-LN causal blocks, final LN, tied lm_head."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, dropout, bias):
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList([Block(n_embd, n_head, 4 * n_embd, True, dropout, bias) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight                         # weight tying, as nanoGPT
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
        for name, p in self.named_parameters():                       # scaled init of the residual projections
            if name.endswith("attn.c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx):
        if idx.dim() != 2:
            raise ValueError(f"gpt input must be token ids of shape (B, T); got shape {tuple(idx.shape)}")
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise ValueError(f"gpt input must be integer token ids (torch.long); got dtype {idx.dtype}")
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length T={T} is out of range: T must be in [1, block_size={self.block_size}]")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt(vocab_size: int, block_size: int = 256, n_layer: int = 6, n_head: int = 6, n_embd: int = 384,
        dropout: float = 0.0, bias: bool = True) -> GPT:
    """A nanoGPT-style causal decoder: learned token and position embeddings, ``n_layer`` pre-LN blocks with causal
    self-attention (``n_head`` heads) and a 4x GELU MLP, a final LayerNorm and an ``lm_head`` tied to the token
    embedding. ``forward(idx)`` maps token ids ``(B, T)`` (``T <= block_size``) to logits ``(B, T, vocab_size)``.
    Init as nanoGPT: normal(0, 0.02), residual projections normal(0, 0.02 / sqrt(2 n_layer)), zero biases.
    ``bias=False`` drops the biases of the linear layers and LayerNorms.
    """
    vocab_size = check_int("vocab_size", vocab_size, 1)
    block_size = check_int("block_size", block_size, 1)
    n_layer = check_int("n_layer", n_layer, 1, 256)
    n_embd = check_int("n_embd", n_embd, 1)
    n_head = check_int("n_head", n_head, 1, n_embd)
    if n_embd % n_head:
        raise ValueError(f"n_head={n_head} is not accepted: n_head must divide n_embd={n_embd}")
    dropout = check_float("dropout", dropout, 0.0, 1.0, high_inclusive=False)
    bias = check_bool("bias", bias)
    return GPT(vocab_size, block_size, n_layer, n_head, n_embd, dropout, bias)
