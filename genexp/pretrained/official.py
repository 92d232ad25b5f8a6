"""Read published StyleGAN2 network files into one plain layout, executing nothing in them.

``read_network_file(path)`` accepts

- a stylegan2-ada-pytorch pickle (``network-snapshot-*.pkl``, ``ffhq.pkl``): format ``stylegan2-ada-pytorch``;
- a stylegan3-repo pickle of a StyleGAN2 network (``--cfg=stylegan2``): format ``stylegan3``;
- a TF-era pickle of the official StyleGAN2 / StyleGAN2-ADA (TF) code, the ones stylegan2-ada-pytorch's
  ``legacy.py`` converts (``stylegan2-ffhq-config-f.pkl``): format ``tf-stylegan2``;
- a rosinality/stylegan2-pytorch checkpoint (``550000.pt``, ``convert_weight.py`` output): format ``rosinality``;

and returns ``{"format", "G_kwargs", "G", "G_ema", "D_kwargs"?, "D"?, "notes"}`` where the kwargs are
the official stylegan2-ada-pytorch ``training.networks.Generator`` / ``Discriminator`` constructor
arguments and ``G`` / ``G_ema`` / ``D`` are that code's ``state_dict()`` (official names, official
layouts, weights stored without their equalised-learning-rate gain, as the official code stores them).
``notes`` lists anything the reader had to fill in that the file did not hold (one line each).

Every tensor set is checked against the names and shapes the official constructor would create from
the returned kwargs, so a result that loads here loads into the official network with
``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genexp.errors import UserError, first_line
from genexp.pretrained.safe_pickle import (
    PersistentRecord,
    TFNetworkRecord,
    load_pickle,
    unwrap,
)

_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6, non-zip) format starts with this pickled magic number.
_LEGACY_TORCH_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)

Shapes = OrderedDict  # name -> shape, in state_dict() order


class _NotReadable(Exception):
    """Internal: a reason the file is not a StyleGAN2 network genexp can read."""


# ---------------------------------------------------------------------------------------------
# The official networks' tensor names and shapes, from their constructor arguments
# (stylegan2-ada-pytorch training/networks.py; stylegan3 training/networks_stylegan2.py names them
# identically). Order follows state_dict(): a module's parameters, then its buffers, then children.
# ---------------------------------------------------------------------------------------------

def setup_filter(f) -> torch.Tensor:
    """upfirdn2d.setup_filter(f) with its defaults: outer product unless separable, sum 1."""
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


def _fc(out: Shapes, prefix: str, in_f: int, out_f: int, bias: bool = True):
    out[prefix + "weight"] = (out_f, in_f)
    if bias:
        out[prefix + "bias"] = (out_f,)


def _conv(out: Shapes, prefix: str, in_c: int, out_c: int, k: int, filt: tuple, bias: bool = True):
    out[prefix + "weight"] = (out_c, in_c, k, k)
    if bias:
        out[prefix + "bias"] = (out_c,)
    out[prefix + "resample_filter"] = filt


def _mapping(out: Shapes, prefix: str, z_dim: int, c_dim: int, w_dim: int, with_w_avg: bool, mk: dict,
             default_layers: int):
    num_layers = mk.get("num_layers", default_layers)
    embed = mk.get("embed_features")
    embed = w_dim if embed is None else embed
    embed = 0 if c_dim == 0 else embed
    layer = mk.get("layer_features")
    layer = w_dim if layer is None else layer
    feats = [z_dim + embed] + [layer] * (num_layers - 1) + [w_dim]
    if with_w_avg:
        out[prefix + "w_avg"] = (w_dim,)
    if c_dim > 0:
        _fc(out, prefix + "embed.", c_dim, embed)
    for i in range(num_layers):
        _fc(out, f"{prefix}fc{i}.", feats[i], feats[i + 1])


def _channels(base: int, cmax: int, resolutions) -> dict[int, int]:
    return {r: min(base // r, cmax) for r in resolutions}


def generator_shapes(kw: dict) -> Shapes:
    """Names and shapes of ``Generator(**kw).state_dict()``."""
    sk, mk = kw.get("synthesis_kwargs") or {}, kw.get("mapping_kwargs") or {}
    w_dim, res_out, img_c = kw["w_dim"], kw["img_resolution"], kw["img_channels"]
    arch = sk.get("architecture", "skip")
    use_noise = sk.get("use_noise", True)
    filt = tuple(setup_filter(sk.get("resample_filter", [1, 3, 3, 1])).shape)
    resolutions = [2 ** i for i in range(2, int(math.log2(res_out)) + 1)]
    ch = _channels(sk.get("channel_base", 32768), sk.get("channel_max", 512), resolutions)
    out: Shapes = OrderedDict()
    for r in resolutions:
        p = f"synthesis.b{r}."
        in_c, out_c = (ch[r // 2] if r > 4 else 0), ch[r]
        if in_c == 0:
            out[p + "const"] = (out_c, r, r)
        out[p + "resample_filter"] = filt
        layers = ([("conv0", in_c)] if in_c else []) + [("conv1", out_c)]
        for name, lin in layers:
            q = p + name + "."
            out[q + "weight"] = (out_c, lin, 3, 3)
            if use_noise:
                out[q + "noise_strength"] = ()
            out[q + "bias"] = (out_c,)
            out[q + "resample_filter"] = filt
            if use_noise:
                out[q + "noise_const"] = (r, r)
            _fc(out, q + "affine.", w_dim, lin)
        if r == res_out or arch == "skip":
            out[p + "torgb.weight"] = (img_c, out_c, 1, 1)
            out[p + "torgb.bias"] = (img_c,)
            _fc(out, p + "torgb.affine.", w_dim, out_c)
        if in_c and arch == "resnet":
            out[p + "skip.weight"] = (out_c, in_c, 1, 1)
            out[p + "skip.resample_filter"] = filt
    with_w_avg = mk.get("w_avg_beta", 0.995) is not None
    _mapping(out, "mapping.", kw["z_dim"], kw["c_dim"], w_dim, with_w_avg, mk, 8)
    return out


def discriminator_shapes(kw: dict) -> Shapes:
    """Names and shapes of ``Discriminator(**kw).state_dict()``."""
    bk, mk, ek = kw.get("block_kwargs") or {}, kw.get("mapping_kwargs") or {}, kw.get("epilogue_kwargs") or {}
    res_in, img_c, c_dim = kw["img_resolution"], kw["img_channels"], kw["c_dim"]
    arch = kw.get("architecture", "resnet")
    filt = tuple(setup_filter(bk.get("resample_filter", [1, 3, 3, 1])).shape)
    resolutions = [2 ** i for i in range(int(math.log2(res_in)), 2, -1)]
    ch = _channels(kw.get("channel_base", 32768), kw.get("channel_max", 512), resolutions + [4])
    cmap = kw.get("cmap_dim")
    cmap = ch[4] if cmap is None else cmap
    cmap = 0 if c_dim == 0 else cmap
    out: Shapes = OrderedDict()
    for r in resolutions:
        p = f"b{r}."
        in_c, tmp, oc = (ch[r] if r < res_in else 0), ch[r], ch[r // 2]
        out[p + "resample_filter"] = filt
        if in_c == 0 or arch == "skip":
            _conv(out, p + "fromrgb.", img_c, tmp, 1, filt)
        _conv(out, p + "conv0.", tmp, tmp, 3, filt)
        _conv(out, p + "conv1.", tmp, oc, 3, filt)
        if arch == "resnet":
            _conv(out, p + "skip.", tmp, oc, 1, filt, bias=False)
    if c_dim > 0:
        _mapping(out, "mapping.", 0, c_dim, cmap, False, mk, 8)
    c4, nc = ch[4], ek.get("mbstd_num_channels", 1)
    if arch == "skip":
        _conv(out, "b4.fromrgb.", img_c, c4, 1, filt)
    _conv(out, "b4.conv.", c4 + nc, c4, 3, filt)
    _fc(out, "b4.fc.", c4 * 16, c4)
    _fc(out, "b4.out.", c4, 1 if cmap == 0 else cmap)
    return out


def _filter_value(kw: dict, generator: bool) -> torch.Tensor:
    src = (kw.get("synthesis_kwargs") or {}) if generator else (kw.get("block_kwargs") or {})
    return setup_filter(src.get("resample_filter", [1, 3, 3, 1]))


def _check_against(state: dict, shapes: Shapes, what: str):
    for name, shape in shapes.items():
        if name not in state:
            raise _NotReadable(f"{what} lacks tensor {name!r} that its constructor arguments call for")
        if tuple(state[name].shape) != tuple(shape):
            raise _NotReadable(f"{what} tensor {name!r} has shape {tuple(state[name].shape)}, "
                               f"its constructor arguments call for {tuple(shape)}")
    extra = [k for k in state if k not in shapes]
    if extra:
        raise _NotReadable(f"{what} has tensor {extra[0]!r} that its constructor arguments do not call for")


def _ordered(state: dict, shapes: Shapes) -> OrderedDict:
    return OrderedDict((k, state[k]) for k in shapes)


# ---------------------------------------------------------------------------------------------
# stylegan2-ada-pytorch / stylegan3 pickles: persistent-class records.
# ---------------------------------------------------------------------------------------------

_G_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
_D_POSITIONAL = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                 "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")


def _plain(obj):
    obj = unwrap(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


def _record_kwargs(rec: PersistentRecord, positional: tuple) -> dict:
    args = rec.state.get("_init_args") or ()
    kwargs = rec.state.get("_init_kwargs")
    if not isinstance(kwargs, dict) or not isinstance(args, (tuple, list)):
        raise _NotReadable(f"{rec.class_name} record has no constructor arguments (_init_kwargs)")
    out = dict(zip(positional, _plain(list(args))))
    out.update(_plain(kwargs))
    return out


def _record_state_dict(rec: PersistentRecord, prefix: str = "", out: dict | None = None) -> dict:
    out = OrderedDict() if out is None else out
    st = rec.state
    skip = st.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        items = st.get(group) or {}
        if not isinstance(items, dict):
            raise _NotReadable(f"{prefix or rec.class_name} has a malformed {group}")
        for name, t in items.items():
            if t is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise _NotReadable(f"{prefix}{name} is not a tensor")
            out[prefix + name] = t.detach()
    for name, child in (st.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise _NotReadable(f"submodule {prefix}{name} is not an official persistent module")
        _record_state_dict(child, f"{prefix}{name}.", out)
    return out


def _is_stylegan3_tr(rec: PersistentRecord) -> bool:
    syn = rec.submodule("synthesis")
    if syn is not None and (syn.submodule("input") is not None or syn.class_name != "SynthesisNetwork"):
        return True
    return "class SynthesisInput" in rec.module_src


def _sg3_generator_kwargs(kw: dict) -> dict:
    """stylegan3's networks_stylegan2.Generator takes synthesis arguments flat and has other
    defaults; rewrite them as stylegan2-ada-pytorch's Generator arguments with those defaults
    spelled out, so that both constructors build the same function."""
    top = {k: kw.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels") if k in kw}
    mapping = dict(kw.pop("mapping_kwargs", None) or {})
    mapping.setdefault("w_avg_beta", 0.998)
    # fused vs. unfused modulated convolution is a speed choice: both compute the same function,
    # and stylegan2-ada-pytorch picks between them itself.
    kw.pop("fused_modconv_default", None)
    kw.setdefault("num_fp16_res", 4)
    kw.setdefault("conv_clamp", 256)
    return {**top, "mapping_kwargs": mapping, "synthesis_kwargs": kw}


def _sg3_discriminator_kwargs(kw: dict) -> dict:
    kw.setdefault("num_fp16_res", 4)
    kw.setdefault("conv_clamp", 256)
    return kw


def _read_persistent(data: dict, path: Path) -> dict:
    g_ema = data.get("G_ema")
    if not isinstance(g_ema, PersistentRecord) or g_ema.class_name != "Generator":
        raise _NotReadable("the pickle holds no official G_ema Generator")
    if _is_stylegan3_tr(g_ema):
        raise UserError(f"{path} is a StyleGAN3 (-T/-R) network; genexp reads StyleGAN2 networks only: not loaded")
    # stylegan3's networks_stylegan2.py threads update_emas through forward(); stylegan2-ada-pytorch's
    # networks.py never mentions it.
    sg3 = "update_emas" in g_ema.module_src
    fmt = "stylegan3" if sg3 else "stylegan2-ada-pytorch"
    result: dict[str, Any] = {"format": fmt}
    notes: list[str] = []

    def generator(rec: PersistentRecord, what: str):
        kw = _record_kwargs(rec, _G_POSITIONAL[:6] if sg3 else _G_POSITIONAL)
        kw = _sg3_generator_kwargs(kw) if sg3 else kw
        state = _record_state_dict(rec)
        shapes = generator_shapes(kw)
        _check_against(state, shapes, what)
        return kw, _ordered(state, shapes)

    result["G_kwargs"], result["G_ema"] = generator(g_ema, "G_ema")
    g = data.get("G")
    if isinstance(g, PersistentRecord) and g.class_name == "Generator":
        _, result["G"] = generator(g, "G")
    else:
        result["G"] = OrderedDict((k, v) for k, v in result["G_ema"].items())
        notes.append("the file has no training G; G is a copy of G_ema")
    d = data.get("D")
    if isinstance(d, PersistentRecord) and d.class_name == "Discriminator":
        kw = _record_kwargs(d, _D_POSITIONAL)
        kw = _sg3_discriminator_kwargs(kw) if sg3 else kw
        state = _record_state_dict(d)
        shapes = discriminator_shapes(kw)
        _check_against(state, shapes, "D")
        result["D_kwargs"], result["D"] = kw, _ordered(state, shapes)
    result["notes"] = notes
    return result


# ---------------------------------------------------------------------------------------------
# TF-era pickles: dnnlib.tflib.network.Network states. The mapping from TF variables to official
# tensors is the one stylegan2-ada-pytorch's legacy.py applies (written anew here): dense weights
# [in, out] are transposed, conv weights [kh, kw, in, out] become [out, in, kh, kw], the up-sampling
# convolutions (Conv0_up, and Skip in a resnet G) are also flipped in both spatial axes because TF
# applied them as a transposed convolution of the flipped kernel, mod_bias gets the +1 that TF added
# at run time, noise maps lose their [1, 1] lead and the constant input its [1] lead.
# ---------------------------------------------------------------------------------------------

_TF_G_SYNTHESIS = ("G_synthesis_stylegan2", "G_synthesis")   # StyleGAN2 (TF) / StyleGAN2-ADA (TF)
_TF_D = ("D_stylegan2", "D_main")
# Static kwargs that do not change the weights or the function the converted network computes.
_TF_IGNORED = {"truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
               "style_mixing_prob", "structure", "randomize_noise", "fused_modconv", "dtype",
               "is_template_graph", "mapping_func", "synthesis_func", "components", "is_training",
               "is_validation", "return_dlatents", "augment_strength"}
# Static kwargs accepted only at the value the official converter assumes.
_TF_ONLY_DEFAULT = {"fmap_decay": 1, "fmap_min": 1, "normalize_latents": True, "fmap_const": None,
                    "use_pagan": False, "use_spectral_norm": False, "adaptive_dropout": 0, "score_size": 1,
                    "score_max": 1, "freeze_layers": 0}


def _tf_state(net: TFNetworkRecord) -> dict:
    state = getattr(net, "state", None)
    if not isinstance(state, dict):
        raise _NotReadable("a TF network record has no state")
    return state


def _tf_params(net: TFNetworkRecord, prefix: str = "", out: dict | None = None) -> dict:
    out = {} if out is None else out
    state = _tf_state(net)
    for item in state.get("variables") or []:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise _NotReadable("a TF network's variables are not (name, array) pairs")
        value = unwrap(item[1])
        if isinstance(value, (np.floating, float, int)):
            value = np.asarray(value, dtype=np.float32)
        if not isinstance(value, np.ndarray):
            raise _NotReadable(f"TF variable {prefix}{item[0]} is not a numeric array")
        out[prefix + item[0]] = value
    for name, comp in (state.get("components") or {}).items():
        if not isinstance(comp, TFNetworkRecord):
            raise _NotReadable(f"TF component {name!r} is not a network")
        _tf_params(comp, prefix + name + "/", out)
    return out


class _TFKwargs:
    """legacy.py's kwarg(): reads static_kwargs with a default and remembers which names it knew."""

    def __init__(self, static: dict, path: Path):
        self.static, self.known, self.path = _plain(static or {}), set(), path

    def __call__(self, name, default=None, none=None):
        self.known.add(name)
        val = self.static.get(name, default)
        return val if val is not None else none

    def check_unknown(self):
        for name, val in self.static.items():
            if name in self.known or name in _TF_IGNORED:
                continue
            if name in _TF_ONLY_DEFAULT and val == _TF_ONLY_DEFAULT[name]:
                continue
            raise UserError(f"{self.path} uses the TF option {name}={val!r}, which genexp cannot convert: not loaded")


def _tf_generator_kwargs(net: TFNetworkRecord, path: Path) -> dict:
    kwarg = _TFKwargs(_tf_state(net).get("static_kwargs"), path)
    w_avg_beta = kwarg("dlatent_avg_beta", kwarg("w_avg_beta", 0.995))
    kw = {
        "z_dim": kwarg("latent_size", 512),
        "c_dim": kwarg("label_size", 0),
        "w_dim": kwarg("dlatent_size", 512),
        "img_resolution": kwarg("resolution", 1024),
        "img_channels": kwarg("num_channels", 3),
        "mapping_kwargs": {
            "num_layers": kwarg("mapping_layers", 8),
            "embed_features": kwarg("label_fmaps", None),
            "layer_features": kwarg("mapping_fmaps", None),
            "activation": kwarg("mapping_nonlinearity", "lrelu"),
            "lr_multiplier": kwarg("mapping_lrmul", 0.01),
            # None (no tracking) in TF still leaves dlatent_avg in the file; official w_avg needs a beta.
            "w_avg_beta": 1 if w_avg_beta is None else w_avg_beta,
        },
        "synthesis_kwargs": {
            "channel_base": kwarg("fmap_base", 16384) * 2,
            "channel_max": kwarg("fmap_max", 512),
            "num_fp16_res": kwarg("num_fp16_res", 0),
            "conv_clamp": kwarg("conv_clamp", None),
            "architecture": kwarg("architecture", "skip"),
            "resample_filter": kwarg("resample_kernel", [1, 3, 3, 1]),
            "use_noise": kwarg("use_noise", True),
            "activation": kwarg("nonlinearity", "lrelu"),
        },
    }
    kwarg.check_unknown()
    return kw


def _tf_discriminator_kwargs(net: TFNetworkRecord, path: Path) -> dict:
    state = _tf_state(net)
    kwarg = _TFKwargs(state.get("static_kwargs"), path)
    # StyleGAN2 (TF) D_stylegan2 defaults to minibatch-stddev groups of 4; StyleGAN2-ADA (TF) D_main to
    # the whole minibatch (None). legacy.py uses None for both, which changes a config-f D's output.
    mbstd_default = 4 if state.get("build_func_name") == "D_stylegan2" else None
    kw = {
        "c_dim": kwarg("label_size", 0),
        "img_resolution": kwarg("resolution", 1024),
        "img_channels": kwarg("num_channels", 3),
        "architecture": kwarg("architecture", "resnet"),
        "channel_base": kwarg("fmap_base", 16384) * 2,
        "channel_max": kwarg("fmap_max", 512),
        "num_fp16_res": kwarg("num_fp16_res", 0),
        "conv_clamp": kwarg("conv_clamp", None),
        "cmap_dim": kwarg("mapping_fmaps", None),
        "block_kwargs": {
            "activation": kwarg("nonlinearity", "lrelu"),
            "resample_filter": kwarg("resample_kernel", [1, 3, 3, 1]),
            "freeze_layers": kwarg("freeze_layers", 0),
        },
        "mapping_kwargs": {
            "num_layers": kwarg("mapping_layers", 0),
            "embed_features": kwarg("mapping_fmaps", None),
            "layer_features": kwarg("mapping_fmaps", None),
            "activation": kwarg("nonlinearity", "lrelu"),
            "lr_multiplier": kwarg("mapping_lrmul", 0.1),
        },
        "epilogue_kwargs": {
            "mbstd_group_size": kwarg("mbstd_group_size", mbstd_default),
            "mbstd_num_channels": kwarg("mbstd_num_features", 1),
            "activation": kwarg("nonlinearity", "lrelu"),
        },
    }
    kwarg.check_unknown()
    return kw


def _t(a: np.ndarray, *perm) -> np.ndarray:
    return a.transpose(*perm) if perm else a.T


_TF_G_RULES: list[tuple[str, Callable[..., tuple[str, Callable[[np.ndarray], np.ndarray]]]]] = [
    (r"mapping\.w_avg", lambda: ("dlatent_avg", lambda a: a)),
    (r"mapping\.embed\.weight", lambda: ("mapping/LabelEmbed/weight", _t)),
    (r"mapping\.embed\.bias", lambda: ("mapping/LabelEmbed/bias", lambda a: a)),
    (r"mapping\.fc(\d+)\.weight", lambda i: (f"mapping/Dense{i}/weight", _t)),
    (r"mapping\.fc(\d+)\.bias", lambda i: (f"mapping/Dense{i}/bias", lambda a: a)),
    (r"synthesis\.b4\.const", lambda: ("synthesis/4x4/Const/const", lambda a: a[0])),
    (r"synthesis\.b4\.conv1\.weight", lambda: ("synthesis/4x4/Conv/weight", lambda a: _t(a, 3, 2, 0, 1))),
    (r"synthesis\.b4\.conv1\.bias", lambda: ("synthesis/4x4/Conv/bias", lambda a: a)),
    (r"synthesis\.b4\.conv1\.noise_const", lambda: ("synthesis/noise0", lambda a: a[0, 0])),
    (r"synthesis\.b4\.conv1\.noise_strength", lambda: ("synthesis/4x4/Conv/noise_strength", lambda a: a)),
    (r"synthesis\.b4\.conv1\.affine\.weight", lambda: ("synthesis/4x4/Conv/mod_weight", _t)),
    (r"synthesis\.b4\.conv1\.affine\.bias", lambda: ("synthesis/4x4/Conv/mod_bias", lambda a: a + 1)),
    (r"synthesis\.b(\d+)\.conv0\.weight",
     lambda r: (f"synthesis/{r}x{r}/Conv0_up/weight", lambda a: _t(a[::-1, ::-1], 3, 2, 0, 1))),
    (r"synthesis\.b(\d+)\.conv0\.bias", lambda r: (f"synthesis/{r}x{r}/Conv0_up/bias", lambda a: a)),
    (r"synthesis\.b(\d+)\.conv0\.noise_const",
     lambda r: (f"synthesis/noise{int(math.log2(int(r))) * 2 - 5}", lambda a: a[0, 0])),
    (r"synthesis\.b(\d+)\.conv0\.noise_strength",
     lambda r: (f"synthesis/{r}x{r}/Conv0_up/noise_strength", lambda a: a)),
    (r"synthesis\.b(\d+)\.conv0\.affine\.weight", lambda r: (f"synthesis/{r}x{r}/Conv0_up/mod_weight", _t)),
    (r"synthesis\.b(\d+)\.conv0\.affine\.bias",
     lambda r: (f"synthesis/{r}x{r}/Conv0_up/mod_bias", lambda a: a + 1)),
    (r"synthesis\.b(\d+)\.conv1\.weight",
     lambda r: (f"synthesis/{r}x{r}/Conv1/weight", lambda a: _t(a, 3, 2, 0, 1))),
    (r"synthesis\.b(\d+)\.conv1\.bias", lambda r: (f"synthesis/{r}x{r}/Conv1/bias", lambda a: a)),
    (r"synthesis\.b(\d+)\.conv1\.noise_const",
     lambda r: (f"synthesis/noise{int(math.log2(int(r))) * 2 - 4}", lambda a: a[0, 0])),
    (r"synthesis\.b(\d+)\.conv1\.noise_strength",
     lambda r: (f"synthesis/{r}x{r}/Conv1/noise_strength", lambda a: a)),
    (r"synthesis\.b(\d+)\.conv1\.affine\.weight", lambda r: (f"synthesis/{r}x{r}/Conv1/mod_weight", _t)),
    (r"synthesis\.b(\d+)\.conv1\.affine\.bias", lambda r: (f"synthesis/{r}x{r}/Conv1/mod_bias", lambda a: a + 1)),
    (r"synthesis\.b(\d+)\.torgb\.weight",
     lambda r: (f"synthesis/{r}x{r}/ToRGB/weight", lambda a: _t(a, 3, 2, 0, 1))),
    (r"synthesis\.b(\d+)\.torgb\.bias", lambda r: (f"synthesis/{r}x{r}/ToRGB/bias", lambda a: a)),
    (r"synthesis\.b(\d+)\.torgb\.affine\.weight", lambda r: (f"synthesis/{r}x{r}/ToRGB/mod_weight", _t)),
    (r"synthesis\.b(\d+)\.torgb\.affine\.bias", lambda r: (f"synthesis/{r}x{r}/ToRGB/mod_bias", lambda a: a + 1)),
    (r"synthesis\.b(\d+)\.skip\.weight",
     lambda r: (f"synthesis/{r}x{r}/Skip/weight", lambda a: _t(a[::-1, ::-1], 3, 2, 0, 1))),
]

_TF_D_RULES: list[tuple[str, Callable[..., tuple[str, Callable[[np.ndarray], np.ndarray]]]]] = [
    (r"b(\d+)\.fromrgb\.weight", lambda r: (f"{r}x{r}/FromRGB/weight", lambda a: _t(a, 3, 2, 0, 1))),
    (r"b(\d+)\.fromrgb\.bias", lambda r: (f"{r}x{r}/FromRGB/bias", lambda a: a)),
    (r"b(\d+)\.conv(\d+)\.weight",
     lambda r, i: (f"{r}x{r}/Conv{i}{['', '_down'][int(i)]}/weight", lambda a: _t(a, 3, 2, 0, 1))),
    (r"b(\d+)\.conv(\d+)\.bias", lambda r, i: (f"{r}x{r}/Conv{i}{['', '_down'][int(i)]}/bias", lambda a: a)),
    (r"b(\d+)\.skip\.weight", lambda r: (f"{r}x{r}/Skip/weight", lambda a: _t(a, 3, 2, 0, 1))),
    (r"mapping\.embed\.weight", lambda: ("LabelEmbed/weight", _t)),
    (r"mapping\.embed\.bias", lambda: ("LabelEmbed/bias", lambda a: a)),
    (r"mapping\.fc(\d+)\.weight", lambda i: (f"Mapping{i}/weight", _t)),
    (r"mapping\.fc(\d+)\.bias", lambda i: (f"Mapping{i}/bias", lambda a: a)),
    (r"b4\.conv\.weight", lambda: ("4x4/Conv/weight", lambda a: _t(a, 3, 2, 0, 1))),
    (r"b4\.conv\.bias", lambda: ("4x4/Conv/bias", lambda a: a)),
    (r"b4\.fc\.weight", lambda: ("4x4/Dense0/weight", _t)),
    (r"b4\.fc\.bias", lambda: ("4x4/Dense0/bias", lambda a: a)),
    (r"b4\.out\.weight", lambda: ("Output/weight", _t)),
    (r"b4\.out\.bias", lambda: ("Output/bias", lambda a: a)),
]


def _tf_fill(shapes: Shapes, rules, params: dict, filt: torch.Tensor, what: str) -> OrderedDict:
    out: OrderedDict = OrderedDict()
    for name, shape in shapes.items():
        if name.endswith("resample_filter"):
            out[name] = filt.clone()
            continue
        for pattern, source in rules:
            m = re.fullmatch(pattern, name)
            if m:
                tf_name, fn = source(*m.groups())
                break
        else:
            raise _NotReadable(f"{what}: no TF variable maps to official tensor {name!r}")
        if tf_name not in params:
            raise _NotReadable(f"{what}: TF variable {tf_name!r} is missing")
        # np.array, not ascontiguousarray: the latter turns a 0-d noise_strength into shape (1,).
        value = torch.from_numpy(np.array(fn(params[tf_name]), dtype=np.float32, order="C", copy=True))
        if tuple(value.shape) != tuple(shape):
            raise _NotReadable(f"{what}: TF variable {tf_name!r} gives {name!r} shape {tuple(value.shape)}, "
                               f"expected {tuple(shape)}")
        out[name] = value
    # Variables the official network has no place for (e.g. a 'lod' counter) are left out, as legacy.py does.
    return out


def _convert_tf_generator(net: TFNetworkRecord, path: Path, what: str) -> tuple[dict, OrderedDict]:
    state = _tf_state(net)
    comps = state.get("components") or {}
    funcs = {k: _tf_state(v).get("build_func_name") for k, v in comps.items() if isinstance(v, TFNetworkRecord)}
    if not isinstance(state.get("version"), int) or state["version"] < 4:
        raise _NotReadable(f"{what} is a TF network pickle of version {state.get('version')} (needs 4 or later)")
    if funcs.get("synthesis") not in _TF_G_SYNTHESIS or funcs.get("mapping") != "G_mapping":
        raise _NotReadable(f"{what} is built by {state.get('build_func_name')}/{funcs.get('synthesis')}, "
                           "not the official StyleGAN2 G_main/G_synthesis")
    kw = _tf_generator_kwargs(net, path)
    # (legacy.py also renames 'ToRGB_lod*' variables; only the G_synthesis_stylegan_revised of configs
    # A-D has them, and that build function is refused above.)
    params = _tf_params(net)
    shapes = generator_shapes(kw)
    return kw, _tf_fill(shapes, _TF_G_RULES, params, _filter_value(kw, True), what)


def _convert_tf_discriminator(net: TFNetworkRecord, path: Path) -> tuple[dict, OrderedDict]:
    state = _tf_state(net)
    if not isinstance(state.get("version"), int) or state["version"] < 4:
        raise _NotReadable(f"D is a TF network pickle of version {state.get('version')} (needs 4 or later)")
    if state.get("build_func_name") not in _TF_D:
        raise _NotReadable(f"D is built by {state.get('build_func_name')}, not the official D_stylegan2/D_main")
    kw = _tf_discriminator_kwargs(net, path)
    params = _tf_params(net)
    shapes = discriminator_shapes(kw)
    return kw, _tf_fill(shapes, _TF_D_RULES, params, _filter_value(kw, False), "D")


def _stylegan1_or_other(nets, path: Path):
    for net in nets:
        state = _tf_state(net)
        func = state.get("build_func_name")
        src = state.get("build_module_src") or ""
        if func in ("G_style", "D_basic") or "def G_style(" in src:
            raise UserError(f"{path} is a StyleGAN (v1) TF network; genexp reads StyleGAN2 networks only: not loaded")
        if func == "G_paper":
            raise UserError(f"{path} is a Progressive GAN TF network; genexp reads StyleGAN2 networks only: not loaded")


def _read_tf(nets: list, path: Path) -> dict:
    _stylegan1_or_other(nets, path)
    result: dict[str, Any] = {"format": "tf-stylegan2"}
    notes: list[str] = []
    if len(nets) == 3:
        tf_g, tf_d, tf_gs = nets
    else:
        tf_g, tf_d, tf_gs = None, None, nets[0]
        notes.append("the file holds one TF network, read as G_ema; G is a copy of it and there is no D")
    result["G_kwargs"], result["G_ema"] = _convert_tf_generator(tf_gs, path, "G_ema")
    if tf_g is not None:
        _, result["G"] = _convert_tf_generator(tf_g, path, "G")
    else:
        result["G"] = OrderedDict(result["G_ema"])
    if tf_d is not None:
        result["D_kwargs"], result["D"] = _convert_tf_discriminator(tf_d, path)
    result["notes"] = notes
    return result


# ---------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch checkpoints (torch.save dicts with 'g_ema', 'g', 'd', 'latent_avg').
#
# Exact correspondences (checked against rosinality's model.py and the official networks.py):
# - Equalised learning rate: both store unscaled weights and multiply by 1/sqrt(fan_in) (times
#   lr_mul for the mapping layers, whose bias is also multiplied by lr_mul) at run time, so weights
#   and biases copy unchanged; the mapping lr_mul is rosinality's default lr_mlp=0.01, which its
#   train.py does not expose, and the official lr_multiplier default is the same.
# - ModulatedConv2d.weight [1, out, in, k, k] -> weight [out, in, k, k]; its 1/sqrt(fan_in) gain
#   cancels in demodulation in both codes; ToRGB (no demodulation) applies the same gain in both.
# - modulation (EqualLinear, bias_init=1) -> affine (FullyConnectedLayer, bias_init=1): stored biases
#   already include the 1.
# - Up-sampling convs (convs.{2k}): both apply a transposed convolution with the stored kernel
#   followed by the same 4-tap blur, so no flip (rosinality's convert_weight flips the TF kernel
#   exactly as legacy.py does).
# - FusedLeakyReLU(bias, slope 0.2, gain sqrt 2) == bias_act lrelu; NoiseInjection.weight [1] ->
#   noise_strength []; noises.noise_i [1, 1, r, r] -> noise_const [r, r] with i = 0 for b4.conv1,
#   2k+1 / 2k+2 for the conv0 / conv1 of the k-th up block.
# - Blur kernels: rosinality stores make_kernel(k) * factor^2 for up-sampling; official
#   resample_filter is the same normalised kernel without the gain (it applies up^2 itself).
# - D: ConvLayer Sequential indices (Blur at .0 when down-sampling, then EqualConv2d, then
#   FusedLeakyReLU) -> Conv2dLayer weight/bias; ResBlock's (out + skip) / sqrt 2 equals the official
#   resnet block's sqrt(0.5) gains; minibatch-stddev group 4, 1 feature, as the official default.
# ---------------------------------------------------------------------------------------------

def _infer_channels(observed: dict[int, int], what: str) -> tuple[int, int]:
    """channel_base, channel_max with min(base // r, max) == observed[r] for every resolution."""
    cmax = max(observed.values())
    lo, hi = 0, 1 << 40
    for r, c in observed.items():
        if c < cmax:
            lo, hi = max(lo, c * r), min(hi, c * r + r - 1)
        else:
            lo = max(lo, cmax * r)
    if lo > hi:
        raise _NotReadable(f"{what}'s channel counts {dict(sorted(observed.items()))} follow no "
                           "channel_base/channel_max rule of the official network")
    return lo, cmax


def _get(sd: dict, key: str, what: str) -> torch.Tensor:
    t = sd.get(key)
    if not isinstance(t, torch.Tensor):
        raise _NotReadable(f"{what} lacks rosinality tensor {key!r}")
    return t


def _ros_filter(kernel: torch.Tensor) -> tuple[torch.Tensor, list | None]:
    f = (kernel / kernel.sum()).to(torch.float32)
    taps = f.sum(dim=1)
    taps = (taps / taps[0]).tolist()
    spelled = [round(v, 6) for v in taps]
    # Official kwargs describe the filter by its 1-D taps; keep the default spelling when it is [1,3,3,1].
    if torch.allclose(f, setup_filter([1, 3, 3, 1])):
        return f, None
    return f, spelled


def _ros_generator(sd: dict, latent_avg, what: str, notes: list) -> tuple[dict, OrderedDict]:
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        n_mlp += 1
    if n_mlp == 0:
        raise _NotReadable(f"{what} has no mapping layers ('style.1.weight')")
    n_up = 0
    while f"to_rgbs.{n_up}.conv.weight" in sd:
        n_up += 1
    res = 4 * 2 ** n_up
    const = _get(sd, "input.input", what)
    w_dim = _get(sd, "style.1.weight", what).shape[1]
    observed = {4: const.shape[1]}
    for k in range(n_up):
        observed[8 * 2 ** k] = _get(sd, f"convs.{2 * k}.conv.weight", what).shape[1]
    base, cmax = _infer_channels(observed, what)
    kernel = sd.get("to_rgbs.0.upsample.kernel", sd.get("convs.0.conv.blur.kernel"))
    filt, taps = _ros_filter(kernel) if isinstance(kernel, torch.Tensor) else (setup_filter([1, 3, 3, 1]), None)
    kw = {
        "z_dim": w_dim, "c_dim": 0, "w_dim": w_dim, "img_resolution": res,
        "img_channels": _get(sd, "to_rgb1.conv.weight", what).shape[1],
        "mapping_kwargs": {"num_layers": n_mlp, "lr_multiplier": 0.01},
        "synthesis_kwargs": {"channel_base": base, "channel_max": cmax, "num_fp16_res": 0, "conv_clamp": None,
                             "architecture": "skip"},
    }
    if taps is not None:
        kw["synthesis_kwargs"]["resample_filter"] = taps
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = _get(sd, f"style.{i + 1}.weight", what)
        out[f"mapping.fc{i}.bias"] = _get(sd, f"style.{i + 1}.bias", what)
    out["synthesis.b4.const"] = const[0]

    def styled(dst: str, src: str, noise: int):
        out[dst + "weight"] = _get(sd, src + "conv.weight", what)[0]
        out[dst + "affine.weight"] = _get(sd, src + "conv.modulation.weight", what)
        out[dst + "affine.bias"] = _get(sd, src + "conv.modulation.bias", what)
        out[dst + "noise_strength"] = _get(sd, src + "noise.weight", what).reshape([])
        out[dst + "bias"] = _get(sd, src + "activate.bias", what)
        out[dst + "noise_const"] = _get(sd, f"noises.noise_{noise}", what)[0, 0]

    def torgb(dst: str, src: str):
        out[dst + "weight"] = _get(sd, src + "conv.weight", what)[0]
        out[dst + "bias"] = _get(sd, src + "bias", what).reshape(-1)
        out[dst + "affine.weight"] = _get(sd, src + "conv.modulation.weight", what)
        out[dst + "affine.bias"] = _get(sd, src + "conv.modulation.bias", what)

    styled("synthesis.b4.conv1.", "conv1.", 0)
    torgb("synthesis.b4.torgb.", "to_rgb1.")
    for k in range(n_up):
        r = 8 * 2 ** k
        styled(f"synthesis.b{r}.conv0.", f"convs.{2 * k}.", 2 * k + 1)
        styled(f"synthesis.b{r}.conv1.", f"convs.{2 * k + 1}.", 2 * k + 2)
        torgb(f"synthesis.b{r}.torgb.", f"to_rgbs.{k}.")
    shapes = generator_shapes(kw)
    for name in shapes:
        if name.endswith("resample_filter"):
            out[name] = filt.clone()
    if isinstance(latent_avg, torch.Tensor) and latent_avg.numel() == w_dim:
        out["mapping.w_avg"] = latent_avg.reshape(-1).to(torch.float32)
    else:
        out["mapping.w_avg"] = _estimate_w_avg(out, n_mlp, w_dim, 0.01)
        notes.append(f"{what}: the file has no latent_avg; mapping.w_avg is the mean of the mapping "
                     "network over 10000 fixed-seed z (as rosinality's mean_latent), used only for truncation")
    _check_against(out, shapes, what)
    return kw, OrderedDict((k, out[k].detach().to(torch.float32).contiguous()) for k in shapes)


@torch.no_grad()
def _estimate_w_avg(sd: dict, n_mlp: int, w_dim: int, lr_mul: float) -> torch.Tensor:
    z = torch.randn(10000, w_dim, generator=torch.Generator().manual_seed(0))
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for i in range(n_mlp):
        w, b = sd[f"mapping.fc{i}.weight"].float(), sd[f"mapping.fc{i}.bias"].float()
        x = torch.nn.functional.leaky_relu(x @ (w * (lr_mul / math.sqrt(w.shape[1]))).T + b * lr_mul, 0.2)
        x = x * math.sqrt(2)
    return x.mean(dim=0)


def _ros_discriminator(sd: dict, what: str) -> tuple[dict, OrderedDict]:
    n_blocks = 0
    while f"convs.{n_blocks + 1}.conv1.0.weight" in sd:
        n_blocks += 1
    res = 4 * 2 ** n_blocks
    observed = {res: _get(sd, "convs.0.0.weight", what).shape[0]}
    for i in range(1, n_blocks + 1):
        observed[res // 2 ** i] = _get(sd, f"convs.{i}.conv2.1.weight", what).shape[0]
    base, cmax = _infer_channels(observed, what)
    kernel = sd.get("convs.1.conv2.0.kernel")
    filt, taps = _ros_filter(kernel) if isinstance(kernel, torch.Tensor) else (setup_filter([1, 3, 3, 1]), None)
    kw = {"c_dim": 0, "img_resolution": res, "img_channels": _get(sd, "convs.0.0.weight", what).shape[1],
          "architecture": "resnet", "channel_base": base, "channel_max": cmax, "num_fp16_res": 0,
          "conv_clamp": None, "epilogue_kwargs": {"mbstd_group_size": 4, "mbstd_num_channels": 1}}
    if taps is not None:
        kw["block_kwargs"] = {"resample_filter": taps}
    out: dict[str, torch.Tensor] = {
        f"b{res}.fromrgb.weight": _get(sd, "convs.0.0.weight", what),
        f"b{res}.fromrgb.bias": _get(sd, "convs.0.1.bias", what),
    }
    for i in range(1, n_blocks + 1):
        r, s = res // 2 ** (i - 1), f"convs.{i}."
        out[f"b{r}.conv0.weight"] = _get(sd, s + "conv1.0.weight", what)
        out[f"b{r}.conv0.bias"] = _get(sd, s + "conv1.1.bias", what)
        out[f"b{r}.conv1.weight"] = _get(sd, s + "conv2.1.weight", what)
        out[f"b{r}.conv1.bias"] = _get(sd, s + "conv2.2.bias", what)
        out[f"b{r}.skip.weight"] = _get(sd, s + "skip.1.weight", what)
    out["b4.conv.weight"] = _get(sd, "final_conv.0.weight", what)
    out["b4.conv.bias"] = _get(sd, "final_conv.1.bias", what)
    for j, name in enumerate(("fc", "out")):
        out[f"b4.{name}.weight"] = _get(sd, f"final_linear.{j}.weight", what)
        out[f"b4.{name}.bias"] = _get(sd, f"final_linear.{j}.bias", what)
    shapes = discriminator_shapes(kw)
    for name in shapes:
        if name.endswith("resample_filter"):
            out[name] = filt.clone()
    _check_against(out, shapes, what)
    return kw, OrderedDict((k, out[k].detach().to(torch.float32).contiguous()) for k in shapes)


def _torch_load(path: Path):
    # rosinality's train.py saves its argparse.Namespace under 'args'; a Namespace is a plain
    # attribute bag, so it is the one class added to torch's weights_only allow-list.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        m = re.search(r"GLOBAL ([\w.]+)", text)
        if m:
            raise UserError(f"file {path} names {m.group(1)}, which is not on genexp's allow-list: "
                            "not loaded") from None
        raise UserError(f"{path} is not a StyleGAN2 network file genexp can read: {first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - torch.load reports damage with many exception types
        raise UserError(f"{path} is not a StyleGAN2 network file genexp can read: truncated or damaged "
                        f"torch checkpoint ({first_line(exc)})") from None


def _read_rosinality(data, path: Path) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("g_ema"), dict) or "style.1.weight" not in data["g_ema"]:
        raise _NotReadable("a torch checkpoint without rosinality's 'g_ema' generator")
    if any(".iwt" in k or ".dwt" in k for k in data["g_ema"]):
        raise _NotReadable("a rosinality SWAGAN checkpoint (wavelet layers), not StyleGAN2")
    notes: list[str] = []
    result: dict[str, Any] = {"format": "rosinality"}
    latent_avg = data.get("latent_avg")
    result["G_kwargs"], result["G_ema"] = _ros_generator(data["g_ema"], latent_avg, "g_ema", notes)
    if isinstance(data.get("g"), dict):
        _, result["G"] = _ros_generator(data["g"], latent_avg, "g", notes)
    else:
        result["G"] = OrderedDict(result["G_ema"])
        notes.append("the file has no training 'g'; G is a copy of G_ema")
    if isinstance(data.get("d"), dict):
        result["D_kwargs"], result["D"] = _ros_discriminator(data["d"], "d")
    result["notes"] = notes
    return result


# ---------------------------------------------------------------------------------------------

def read_network_file(path) -> dict:
    """Read an official StyleGAN2 network file (see the module docstring) without executing any of it.

    Returns ``{"format", "G_kwargs", "G", "G_ema", "D_kwargs"?, "D"?, "notes"}``; raises
    genexp.errors.UserError with one line for anything it cannot or will not read.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_TORCH_MAGIC))
    except OSError as exc:
        raise UserError(f"cannot read network file {path}: {exc.strerror or exc}") from None
    try:
        if head.startswith(_ZIP_MAGIC) or head == _LEGACY_TORCH_MAGIC:
            return _read_rosinality(_torch_load(path), path)
        if not head.startswith(b"\x80"):
            raise _NotReadable("not a pickle or a torch checkpoint")
        data = load_pickle(path)
        if isinstance(data, TFNetworkRecord):
            return _read_tf([data], path)
        if isinstance(data, (tuple, list)) and len(data) == 3 and all(isinstance(n, TFNetworkRecord) for n in data):
            return _read_tf(list(data), path)
        if isinstance(data, dict) and "G_ema" in data:
            return _read_persistent(data, path)
        if isinstance(data, PersistentRecord):
            raise _NotReadable(f"a pickled {data.class_name}, not a network snapshot dict with G_ema")
        raise _NotReadable(f"a pickle of {type(data).__name__}, not a network snapshot")
    except _NotReadable as exc:
        raise UserError(f"{path} is not a StyleGAN2 network file genexp can read: {exc}") from None


__all__ = ["read_network_file", "generator_shapes", "discriminator_shapes", "setup_filter"]
