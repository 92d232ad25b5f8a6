"""DINOv2 ViT-B/14 and ViT-L/14 in plain torch, as the official hub models build them, for FD_DINOv2.

The architecture of facebookresearch/dinov2's ``dinov2_vit{b,l}14`` (hub/backbones.py with
models/vision_transformer.py and layers/): 14-pixel patches, position embeddings for 518-pixel
inputs (37 x 37 patches + the class token) interpolated bicubically to the input's grid with the
official +0.1 offset, pre-norm blocks (LayerNorm eps 1e-6, attention with a qkv bias, LayerScale,
a GELU MLP of 4 x the width), a final LayerNorm; no register tokens (the ``_pretrain`` files);
``block_chunks=0``, so parameters are named ``blocks.N.*``. Names follow the official files so
``dinov2_vit{b,l}14_pretrain.pth`` loads strictly. The feature is the final-norm class token
(``x_norm_clstoken``, what the hub model returns and dgm-eval / EDM2 use): 768 (B) or 1024 (L).

Preprocessing is EDM2's (``calculate_metrics.py``, DINOv2Detector, resize_mode 'torch', modelled
on dgm-eval): images as uint8 pixels, resized to 224 x 224 with bicubic antialiased interpolation,
scaled to [0, 1] and normalised with the ImageNet mean and std; gray images repeat their channel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genexp.data.base import unit_to_uint8
from genexp.metrics.resize import resize

PATCH = 14
PRETRAIN_SIZE = 518  # the pos-embed's grid: 518 / 14 = 37 patches a side
INPUT_SIZE = 224
# The official interpolate_pos_encoding's "historical kludge": a scale factor of (grid + 0.1) / 37
# instead of an output size, so the bicubic sampling positions are those of the released models.
POS_OFFSET = 0.1
LN_EPS = 1e-6
MLP_RATIO = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The standard resize: torch's bicubic with antialiasing at any scale (EDM2's fast path; within
# rounding of PIL's bicubic that dgm-eval uses). Not resize.py's "bicubic", which antialiases only
# when shrinking and so samples a sharper kernel when growing.
STANDARD_RESIZE = "bicubic_antialias"
ARCHS = {  # name: (width, depth, heads)
    "dinov2_vitb14": (768, 12, 12),
    "dinov2_vitl14": (1024, 24, 16),
}
URL = "https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth"


def weights_file(name: str) -> str:
    return f"{name}_pretrain.pth"


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, nn.GELU's default


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, MLP_RATIO * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def interpolate_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(1, 1 + M*M, D) position embeddings of the pretraining grid -> (1, 1 + rows*cols, D) for an
    input grid of rows x cols patches, as the official model: the class token's kept, the patch grid
    resized bicubically (no antialiasing) with scale factors (rows + 0.1) / M, (cols + 0.1) / M."""
    grid = pos_embed.shape[1] - 1
    m = math.isqrt(grid)
    if grid == rows * cols and rows == cols:
        return pos_embed
    dim = pos_embed.shape[-1]
    patches = pos_embed[:, 1:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, scale_factor=((rows + POS_OFFSET) / m, (cols + POS_OFFSET) / m),
                            mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat([pos_embed[:, :1].float(), patches], 1).to(pos_embed.dtype)


class DinoVisionTransformer(nn.Module):
    """ImageNet-normalised images (N, 3, H, W), H and W multiples of 14 -> final-norm class token (N, D)."""

    def __init__(self, name: str = "dinov2_vitl14"):
        super().__init__()
        dim, depth, heads = ARCHS[name]
        self.num_features = dim
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (PRETRAIN_SIZE // PATCH) ** 2, dim))
        # Replaces masked patches in iBOT training; unused here, but part of the official state dict.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        if not self.cls_token.is_meta:  # on the meta device (to be loaded) there is nothing to draw
            self.init_weights()

    def init_weights(self) -> None:
        """The official initialisation, so that a net without its weights (tests) still carries a signal."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], 1)
        tokens = tokens + interpolate_pos_embed(self.pos_embed, rows, cols)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


def load_state(net: DinoVisionTransformer, path, name: str) -> None:
    """An official ``<name>_pretrain.pth`` into ``net``, read as checkpoints are (weights_only); a file
    that is not this network's says which keys or shapes differ, in one line (extractors.WeightsError)."""
    from genexp.metrics.extractors import check_state_dict, read_state_dict

    state = read_state_dict(path)
    check_state_dict(state, net, path, f"a DINOv2 {name} state dict ({weights_file(name)})")
    # assign: a net built on the meta device takes the file's tensors as they are (float32 for compute)
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)


class DinoFeatures(nn.Module):
    """Images in [-1, 1] at any size and 1 or 3 channels -> DINOv2 class-token features.

    Pixels are quantised to uint8 first (as saved images reach dgm-eval and EDM2), resized to 224,
    scaled to [0, 1] and normalised with the ImageNet mean and std."""

    def __init__(self, net: DinoVisionTransformer, resize_filter: str = STANDARD_RESIZE):
        super().__init__()
        self.net, self.resize_filter = net.eval().requires_grad_(False), resize_filter
        self.num_features = net.num_features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = unit_to_uint8(x).float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if self.resize_filter == STANDARD_RESIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False, antialias=True)
        else:
            x = resize(x, INPUT_SIZE, self.resize_filter)
        return (x / 255 - self.mean) / self.std

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))
