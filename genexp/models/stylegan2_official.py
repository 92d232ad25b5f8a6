"""NVIDIA stylegan2-ada-pytorch networks as genexp ones: official constructor kwargs and state dicts
(as genexp/pretrained/ reads them from official pickles, under the official names) in, a genexp
Generator / Discriminator that computes the same function out.

genexp's StyleGAN2 keeps the official module and parameter names, so the state dicts map one to one
except for the FIR filters, which the official code saves as buffers and genexp rebuilds (they are
checked to be the [1, 3, 3, 1] filter genexp uses). Every kwarg is either mapped or, when genexp's
networks cannot represent its value, refused with a UserError naming it.

The official ``num_fp16_res`` becomes genexp's ``bf16_res`` (bfloat16 autocast in the same blocks);
``bf16=False`` builds all-float32 networks (the official ``force_fp32``).
"""

from __future__ import annotations

import torch

from genexp.errors import UserError
from genexp.models.stylegan2 import Discriminator, Generator, make_filter

DEFAULT_FILTER = [1, 3, 3, 1]


class Options:
    """One level of official kwargs: read with ``take``, the leftovers refused by ``done``."""

    def __init__(self, where: str, kwargs: dict | None):
        self.where, self.left = where, dict(kwargs or {})

    def take(self, key: str, default=None):
        return self.left.pop(key, default)

    def only(self, key: str, allowed: tuple, default):
        """A kwarg whose value genexp supports only in ``allowed``."""
        value = self.take(key, default)
        if value not in allowed:
            raise UserError(f"{self.where}.{key}={value!r}: genexp's StyleGAN2 supports only "
                            f"{' or '.join(repr(a) for a in allowed)}")
        return value

    def ignore(self, *keys: str) -> None:
        """Kwargs that change memory layout or training only, not the function computed."""
        for key in keys:
            self.left.pop(key, None)

    def nested(self, key: str) -> Options:
        return Options(f"{self.where}.{key}", self.take(key))

    def done(self) -> None:
        if self.left:
            key = next(iter(self.left))
            raise UserError(f"{self.where}.{key}={self.left[key]!r}: not an option genexp's StyleGAN2 can represent")


def check_filter(opts: Options) -> None:
    f = opts.take("resample_filter", DEFAULT_FILTER)
    if list(f) != DEFAULT_FILTER:
        raise UserError(f"{opts.where}.resample_filter={list(f)}: genexp's StyleGAN2 supports only {DEFAULT_FILTER}")


def mapping_args(opts: Options, generator: bool) -> dict:
    opts.only("activation", ("lrelu",), "lrelu")
    args = dict(mapping_layers=opts.take("num_layers", 8), mapping_lr_multiplier=opts.take("lr_multiplier", 0.01),
                mapping_embed_features=opts.take("embed_features"), mapping_layer_features=opts.take("layer_features"))
    if generator:
        args["w_avg_beta"] = opts.take("w_avg_beta", 0.995)
        if args["w_avg_beta"] is None:
            raise UserError(f"{opts.where}.w_avg_beta=None: genexp's generator always tracks w_avg")
    opts.done()
    return args


def generator_kwargs(G_kwargs: dict, bf16: bool = True) -> dict:
    """genexp Generator arguments for the official Generator's constructor kwargs."""
    opts = Options("G_kwargs", G_kwargs)
    args = dict(z_dim=opts.take("z_dim"), num_classes=opts.take("c_dim", 0), w_dim=opts.take("w_dim"),
                resolution=opts.take("img_resolution"), channels=opts.take("img_channels"))
    args.update(mapping_args(opts.nested("mapping_kwargs"), generator=True))
    syn = opts.nested("synthesis_kwargs")
    num_fp16_res = syn.take("num_fp16_res", 0)
    args.update(channel_base=syn.take("channel_base", 32768), channel_max=syn.take("channel_max", 512),
                architecture=syn.only("architecture", ("orig", "skip", "resnet"), "skip"),
                conv_clamp=syn.take("conv_clamp"), bf16_res=num_fp16_res if bf16 else 0)
    check_filter(syn)
    syn.only("kernel_size", (3,), 3)
    syn.only("use_noise", (True,), True)
    syn.only("activation", ("lrelu",), "lrelu")
    syn.ignore("fp16_channels_last", "channels_last")
    syn.done()
    opts.done()
    return args


def discriminator_kwargs(D_kwargs: dict, bf16: bool = True) -> dict:
    """genexp Discriminator arguments for the official Discriminator's constructor kwargs."""
    opts = Options("D_kwargs", D_kwargs)
    num_fp16_res = opts.take("num_fp16_res", 0)
    args = dict(num_classes=opts.take("c_dim", 0), resolution=opts.take("img_resolution"),
                channels=opts.take("img_channels"),
                architecture=opts.only("architecture", ("orig", "skip", "resnet"), "resnet"),
                channel_base=opts.take("channel_base", 32768), channel_max=opts.take("channel_max", 512),
                conv_clamp=opts.take("conv_clamp"), cmap_dim=opts.take("cmap_dim"),
                bf16_res=num_fp16_res if bf16 else 0)
    block = opts.nested("block_kwargs")
    block.only("activation", ("lrelu",), "lrelu")
    check_filter(block)
    # freeze_layers makes the first layers buffers instead of parameters: same names, same function
    block.ignore("fp16_channels_last", "freeze_layers")
    block.done()
    args.update(mapping_args(opts.nested("mapping_kwargs"), generator=False))
    epi = opts.nested("epilogue_kwargs")
    epi.only("activation", ("lrelu",), "lrelu")
    args.update(mbstd_group=epi.take("mbstd_group_size", 4), mbstd_channels=epi.take("mbstd_num_channels", 1))
    epi.done()
    opts.done()
    return args


def genexp_state_dict(net: torch.nn.Module, state_dict: dict, what: str) -> dict:
    """The official state dict less its FIR filter buffers, which genexp rebuilds: each must be the
    normalised [1, 3, 3, 1] filter and sit where genexp has one."""
    filters = {name for name, _ in net.named_buffers() if name.endswith("resample_filter")}
    expected = make_filter()
    out = {}
    for name, value in state_dict.items():
        if not name.endswith("resample_filter"):
            out[name] = value
        elif name not in filters:
            raise UserError(f"{what}: unexpected official buffer {name}")
        elif value.shape != expected.shape or not torch.allclose(value.float().cpu(), expected, atol=1e-6):
            raise UserError(f"{what}.{name}: a resample filter other than [1, 3, 3, 1]")
    return out


def load(net: torch.nn.Module, state_dict: dict, what: str) -> torch.nn.Module:
    missing, unexpected = net.load_state_dict(genexp_state_dict(net, state_dict, what), strict=False)
    if missing or unexpected:
        names = (missing or unexpected)[:3]
        raise UserError(f"{what}: {'missing' if missing else 'unexpected'} official entries {', '.join(names)}")
    return net


def generator_from_official(G_kwargs: dict, state_dict: dict, bf16: bool = True, **overrides) -> Generator:
    """A genexp Generator computing what the official one built from ``G_kwargs`` with weights
    ``state_dict`` computes (eval mode). ``overrides``: genexp-only arguments (style_mixing, ...)."""
    G = Generator(**{**generator_kwargs(G_kwargs, bf16), **overrides})
    return load(G, state_dict, "G").eval()


def discriminator_from_official(D_kwargs: dict, state_dict: dict, bf16: bool = True, **overrides) -> Discriminator:
    D = Discriminator(**{**discriminator_kwargs(D_kwargs, bf16), **overrides})
    return load(D, state_dict, "D").eval()


def official_state_dict(net: torch.nn.Module) -> dict:
    """genexp weights under the official names and layout, FIR filter buffers included (the reverse
    of ``generator_from_official`` / ``discriminator_from_official`` for the weights)."""
    out = dict(net.state_dict())
    out.update({name: buf.detach().clone() for name, buf in net.named_buffers() if name.endswith("resample_filter")})
    return out


def nets_from_official(record: dict, bf16: bool = True, **g_overrides) -> dict:
    """genexp nets for what genexp.pretrained reads ({G_kwargs, G, G_ema, D_kwargs?, D?}): "G", "G_ema"
    and, when the file has one, "D"."""
    out = {}
    for key in ("G", "G_ema"):
        if record.get(key) is not None:
            out[key] = generator_from_official(record["G_kwargs"], record[key], bf16, **g_overrides)
    if record.get("D") is not None:
        out["D"] = discriminator_from_official(record["D_kwargs"], record["D"], bf16)
    return out
