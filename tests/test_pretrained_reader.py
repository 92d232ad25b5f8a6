"""genexp.pretrained: reading official StyleGAN2 network files without executing them.

Each format's on-disk structure is reproduced here without the original code: pickles name the
official globals (torch_utils.persistence._reconstruct_persistent_obj, dnnlib.util.EasyDict,
dnnlib.tflib.network.Network) through throwaway objects registered under those module paths only
while pickling. The tensors come from the official-code fixture, so every reader result is compared
with the state dicts the official code produced.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from genexp.errors import UserError
from genexp.pretrained import read_network_file
from genexp.pretrained.official import discriminator_shapes, generator_shapes, setup_filter

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/stylegan2-official"


def _fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"fixture {path} is missing on CI")
        pytest.skip(f"fixture {path} not present")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def uncond():
    return _fixture("uncond32.pt")


@pytest.fixture(scope="module")
def cond():
    return _fixture("cond32_clamp.pt")


# --- making official-looking pickles -------------------------------------------------------------

class _FakeModules:
    """Registers throwaway modules (and their parents) in sys.modules while a test pickles, so that
    pickle writes GLOBAL opcodes naming the official module paths."""

    def __init__(self, monkeypatch):
        self.mp = monkeypatch

    def put(self, module: str, name: str, obj):
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            mod_name = ".".join(parts[:i])
            if mod_name not in sys.modules or not getattr(sys.modules[mod_name], "_genexp_fake", False):
                fake = types.ModuleType(mod_name)
                fake._genexp_fake = True
                self.mp.setitem(sys.modules, mod_name, fake)
        obj.__module__ = module
        obj.__qualname__ = name
        setattr(sys.modules[module], name, obj)
        return obj


def _fn():
    def f(*args):  # never called: only its name is pickled
        raise AssertionError("fake global called")
    return f


@pytest.fixture
def fakes(monkeypatch):
    return _FakeModules(monkeypatch)


def _persistent_kit(fakes):
    recon = fakes.put("torch_utils.persistence", "_reconstruct_persistent_obj", _fn())

    class EasyDict(dict):
        pass

    fakes.put("dnnlib.util", "EasyDict", EasyDict)

    class Persist:
        def __init__(self, class_name, state, module_src):
            self.class_name, self.state, self.module_src = class_name, state, module_src

        def __reduce__(self):
            meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name,
                        state=self.state)
            return recon, (meta,)

    return Persist, EasyDict


_BUFFERS = ("resample_filter", "noise_const", "w_avg")
_SUBCLASS = {"synthesis": "SynthesisNetwork", "mapping": "MappingNetwork"}


def _module_records(Persist, EasyDict, state_dict, class_name, kwargs, src):
    """Nest a flat official state dict into persistent-module records, as torch.nn.Module.__dict__."""
    tree: dict = {}
    for name, t in state_dict.items():
        *path, leaf = name.split(".")
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = t

    def build(node, cls, top):
        params, buffers, mods = OrderedDict(), OrderedDict(), OrderedDict()
        for k, v in node.items():
            if isinstance(v, dict):
                mods[k] = build(v, _SUBCLASS.get(k, "Layer"), False)
            elif k in _BUFFERS:
                buffers[k] = v.clone()
            else:
                params[k] = torch.nn.Parameter(v.clone(), requires_grad=False)
        state = {"training": False, "_parameters": params, "_buffers": buffers,
                 "_non_persistent_buffers_set": set(), "_modules": mods,
                 "_forward_hooks": OrderedDict(), "weight_gain": np.float64(0.125), "activation": "lrelu"}
        if top:
            state["_init_args"] = ()
            state["_init_kwargs"] = EasyDict(kwargs)
        return Persist(cls, state, src)

    return build(tree, class_name, True)


ADA_SRC = "import torch\n@persistence.persistent_class\nclass Generator(torch.nn.Module):\n    pass\n"
SG3_SRC = ADA_SRC + "    def forward(self, z, c, update_emas=False):\n        pass\n"


def _ada_pickle(fakes, tmp_path, fx, src=ADA_SRC, g_kwargs=None, d_kwargs=None, name="snap.pkl"):
    Persist, EasyDict = _persistent_kit(fakes)
    gk = fx["G_kwargs"] if g_kwargs is None else g_kwargs
    dk = fx["D_kwargs"] if d_kwargs is None else d_kwargs
    data = {
        "G": _module_records(Persist, EasyDict, fx["G"], "Generator", gk, src),
        "D": _module_records(Persist, EasyDict, fx["D"], "Discriminator", dk, src),
        "G_ema": _module_records(Persist, EasyDict, fx["G_ema"], "Generator", gk, src),
        "augment_pipe": None,
        "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "resolution": 32},
    }
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def _same(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == torch.float32, k
        assert torch.equal(a[k], b[k]), k


# --- the official layout itself ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["uncond32.pt", "cond32_clamp.pt"])
def test_shape_tables_match_the_official_state_dicts(name):
    fx = _fixture(name)
    for net, table in (("G", generator_shapes(fx["G_kwargs"])), ("G_ema", generator_shapes(fx["G_kwargs"])),
                       ("D", discriminator_shapes(fx["D_kwargs"]))):
        assert list(table) == list(fx[net]), net
        assert all(tuple(fx[net][k].shape) == tuple(s) for k, s in table.items()), net
    assert torch.equal(fx["G"]["synthesis.b8.resample_filter"], setup_filter([1, 3, 3, 1]))


# --- stylegan2-ada-pytorch / stylegan3 pickles ----------------------------------------------------

@pytest.mark.parametrize("fx_name", ["uncond", "cond"])
def test_ada_pickle_round_trip(fakes, tmp_path, request, fx_name):
    fx = request.getfixturevalue(fx_name)
    out = read_network_file(_ada_pickle(fakes, tmp_path, fx))
    assert out["format"] == "stylegan2-ada-pytorch"
    assert out["G_kwargs"] == fx["G_kwargs"] and out["D_kwargs"] == fx["D_kwargs"]
    for net in ("G", "G_ema", "D"):
        _same(out[net], fx[net])
    assert out["notes"] == []


def test_stylegan3_repo_pickle_of_stylegan2(fakes, tmp_path, uncond):
    fx = uncond
    sk = dict(fx["G_kwargs"]["synthesis_kwargs"])
    flat = {k: v for k, v in fx["G_kwargs"].items() if k != "synthesis_kwargs"}
    flat.update(channel_base=sk["channel_base"], channel_max=sk["channel_max"], fused_modconv_default="inference_only")
    dk = {k: v for k, v in fx["D_kwargs"].items() if k not in ("num_fp16_res", "conv_clamp")}
    out = read_network_file(_ada_pickle(fakes, tmp_path, fx, src=SG3_SRC, g_kwargs=flat, d_kwargs=dk))
    assert out["format"] == "stylegan3"
    # stylegan3's networks_stylegan2 defaults (fp16 on 4 resolutions, clamp 256, w_avg beta 0.998) spelled out.
    assert out["G_kwargs"] == {
        "z_dim": 64, "c_dim": 0, "w_dim": 64, "img_resolution": 32, "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2, "w_avg_beta": 0.998},
        "synthesis_kwargs": {"channel_base": 1024, "channel_max": 128, "num_fp16_res": 4, "conv_clamp": 256},
    }
    assert out["D_kwargs"]["num_fp16_res"] == 4 and out["D_kwargs"]["conv_clamp"] == 256
    for net in ("G", "G_ema", "D"):
        _same(out[net], fx[net])


def test_ada_pickle_with_g_ema_only(fakes, tmp_path, uncond):
    Persist, EasyDict = _persistent_kit(fakes)
    rec = _module_records(Persist, EasyDict, uncond["G_ema"], "Generator", uncond["G_kwargs"], ADA_SRC)
    path = tmp_path / "gema.pkl"
    path.write_bytes(pickle.dumps({"G_ema": rec}, protocol=2))
    out = read_network_file(path)
    assert "D" not in out and "D_kwargs" not in out
    _same(out["G_ema"], uncond["G_ema"])
    _same(out["G"], uncond["G_ema"])
    assert len(out["notes"]) == 1


def test_ada_pickle_with_missing_tensor_is_refused(fakes, tmp_path, uncond):
    fx = dict(uncond)
    fx["G_ema"] = {k: v for k, v in uncond["G_ema"].items() if k != "synthesis.b16.conv0.affine.bias"}
    with pytest.raises(UserError) as e:
        read_network_file(_ada_pickle(fakes, tmp_path, fx))
    assert "synthesis.b16.conv0.affine.bias" in str(e.value) and "\n" not in str(e.value)


def test_stylegan3_tr_network_is_refused(fakes, tmp_path, uncond):
    Persist, EasyDict = _persistent_kit(fakes)
    empty = {"_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict()}
    inp = Persist("SynthesisInput", {**empty, "_parameters": OrderedDict(weight=torch.zeros(4, 4))}, "src")
    syn = Persist("SynthesisNetwork", {**empty, "_modules": OrderedDict(input=inp)}, "src")
    g = Persist("Generator", {**empty, "_modules": OrderedDict(synthesis=syn),
                              "_init_kwargs": EasyDict(z_dim=4, magnitude_ema_beta=0.999)},
                "class SynthesisInput(torch.nn.Module):\n    pass\n")
    path = tmp_path / "stylegan3-t-ffhq-1024x1024.pkl"
    path.write_bytes(pickle.dumps({"G": g, "D": None, "G_ema": g}, protocol=4))
    with pytest.raises(UserError, match="StyleGAN3 \\(-T/-R\\)") as e:
        read_network_file(path)
    assert "\n" not in str(e.value)


# --- TF-era pickles ------------------------------------------------------------------------------

def _tf_kit(fakes):
    class Network:
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

    fakes.put("dnnlib.tflib.network", "Network", Network)
    return Network


def _np(t):
    return t.detach().numpy().astype(np.float32)


def _conv_tf(w):  # official [out, in, kh, kw] -> TF [kh, kw, in, out]
    return np.ascontiguousarray(_np(w).transpose(2, 3, 1, 0))


def _up_conv_tf(w):  # TF applied up-sampling convs as a transposed conv of the flipped kernel
    return np.ascontiguousarray(_conv_tf(w)[::-1, ::-1])


def _official_to_tf_g(sd, res):
    """The TF variable set of a G_main/G_mapping/G_synthesis_stylegan2 network (names from the
    official TF code's variable scopes), built from an official state dict."""
    mapping, synthesis = [], []
    i = 0
    while f"mapping.fc{i}.weight" in sd:
        mapping += [(f"Dense{i}/weight", _np(sd[f"mapping.fc{i}.weight"]).T.copy()),
                    (f"Dense{i}/bias", _np(sd[f"mapping.fc{i}.bias"]))]
        i += 1
    if "mapping.embed.weight" in sd:
        mapping += [("LabelEmbed/weight", _np(sd["mapping.embed.weight"]).T.copy()),
                    ("LabelEmbed/bias", _np(sd["mapping.embed.bias"]))]
    r_list = [2 ** k for k in range(2, int(np.log2(res)) + 1)]
    noise_idx = 0
    for r in r_list:
        b, s = f"synthesis.b{r}.", f"{r}x{r}/"
        if r == 4:
            synthesis.append(("4x4/Const/const", _np(sd[b + "const"])[None]))
            layers = [("conv1", "Conv", _conv_tf)]
        else:
            layers = [("conv0", "Conv0_up", _up_conv_tf), ("conv1", "Conv1", _conv_tf)]
        for ours, theirs, conv in layers:
            p = b + ours + "."
            synthesis += [(s + theirs + "/weight", conv(sd[p + "weight"])),
                          (s + theirs + "/bias", _np(sd[p + "bias"])),
                          (s + theirs + "/noise_strength", _np(sd[p + "noise_strength"])),
                          (s + theirs + "/mod_weight", _np(sd[p + "affine.weight"]).T.copy()),
                          (s + theirs + "/mod_bias", _np(sd[p + "affine.bias"]) - 1),
                          (f"noise{noise_idx}", _np(sd[p + "noise_const"])[None, None])]
            noise_idx += 1
        synthesis += [(s + "ToRGB/weight", _conv_tf(sd[b + "torgb.weight"])),
                      (s + "ToRGB/bias", _np(sd[b + "torgb.bias"])),
                      (s + "ToRGB/mod_weight", _np(sd[b + "torgb.affine.weight"]).T.copy()),
                      (s + "ToRGB/mod_bias", _np(sd[b + "torgb.affine.bias"]) - 1)]
    synthesis.append(("lod", np.float32(0)))  # TF counter the official network has no place for
    return [("dlatent_avg", _np(sd["mapping.w_avg"]))], mapping, synthesis


def _official_to_tf_d(sd, res):
    out = []
    for r in [2 ** k for k in range(int(np.log2(res)), 2, -1)]:
        b, s = f"b{r}.", f"{r}x{r}/"
        if b + "fromrgb.weight" in sd:
            out += [(s + "FromRGB/weight", _conv_tf(sd[b + "fromrgb.weight"])),
                    (s + "FromRGB/bias", _np(sd[b + "fromrgb.bias"]))]
        out += [(s + "Conv0/weight", _conv_tf(sd[b + "conv0.weight"])), (s + "Conv0/bias", _np(sd[b + "conv0.bias"])),
                (s + "Conv1_down/weight", _conv_tf(sd[b + "conv1.weight"])),
                (s + "Conv1_down/bias", _np(sd[b + "conv1.bias"])),
                (s + "Skip/weight", _conv_tf(sd[b + "skip.weight"]))]
    i = 0
    while f"mapping.fc{i}.weight" in sd:
        out += [(f"Mapping{i}/weight", _np(sd[f"mapping.fc{i}.weight"]).T.copy()),
                (f"Mapping{i}/bias", _np(sd[f"mapping.fc{i}.bias"]))]
        i += 1
    if "mapping.embed.weight" in sd:
        out += [("LabelEmbed/weight", _np(sd["mapping.embed.weight"]).T.copy()),
                ("LabelEmbed/bias", _np(sd["mapping.embed.bias"]))]
    out += [("4x4/Conv/weight", _conv_tf(sd["b4.conv.weight"])), ("4x4/Conv/bias", _np(sd["b4.conv.bias"])),
            ("4x4/Dense0/weight", _np(sd["b4.fc.weight"]).T.copy()), ("4x4/Dense0/bias", _np(sd["b4.fc.bias"])),
            ("Output/weight", _np(sd["b4.out.weight"]).T.copy()), ("Output/bias", _np(sd["b4.out.bias"]))]
    return out


def _tf_net(Network, name, func, static, variables, components=None, src="def G_main(): pass\n"):
    return Network({"version": 4, "name": name, "static_kwargs": static, "components": components or {},
                    "build_module_src": src, "build_func_name": func, "variables": variables})


def _tf_pickle(fakes, tmp_path, fx, ada=False, synthesis_func="G_synthesis_stylegan2", g_func="G_main",
               old_numpy=True):
    Network = _tf_kit(fakes)
    gk, dk = fx["G_kwargs"], fx["D_kwargs"]
    static_g = {"latent_size": gk["z_dim"], "dlatent_size": gk["w_dim"], "label_size": gk["c_dim"],
                "resolution": gk["img_resolution"], "num_channels": gk["img_channels"],
                "mapping_layers": gk["mapping_kwargs"]["num_layers"],
                "fmap_base": gk["synthesis_kwargs"]["channel_base"] // 2,
                "fmap_max": gk["synthesis_kwargs"]["channel_max"], "truncation_psi": 0.5}
    static_d = {"label_size": dk["c_dim"], "resolution": dk["img_resolution"], "num_channels": dk["img_channels"],
                "fmap_base": dk["channel_base"] // 2, "fmap_max": dk["channel_max"]}
    if ada:
        static_d["mapping_layers"] = 8
        static_d["mbstd_group_size"] = 4

    def g_net(sd, name):
        top, mapping, synthesis = _official_to_tf_g(sd, gk["img_resolution"])
        comps = {"mapping": _tf_net(Network, "G_mapping", "G_mapping", static_g, mapping),
                 "synthesis": _tf_net(Network, "G_synthesis", synthesis_func, static_g, synthesis)}
        return _tf_net(Network, name, g_func, static_g, top, comps)

    d = _tf_net(Network, "D", "D_main" if ada else "D_stylegan2", static_d, _official_to_tf_d(fx["D"], 32))
    path = tmp_path / "stylegan2-tiny-config-f.pkl"
    raw = pickle.dumps((g_net(fx["G"], "G"), d, g_net(fx["G_ema"], "Gs")), protocol=3)
    if old_numpy:
        # Pickles of the TF era name numpy 1.x's module path; GLOBAL is newline-framed text, so the
        # bytes can be rewritten in place.
        assert b"cnumpy._core.multiarray\n_reconstruct\n" in raw
        raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(raw)
    return path


def test_tf_stylegan2_pickle(fakes, tmp_path, uncond):
    out = read_network_file(_tf_pickle(fakes, tmp_path, uncond))
    assert out["format"] == "tf-stylegan2"
    for net in ("G", "G_ema", "D"):
        _same(out[net], uncond[net])
    gk = out["G_kwargs"]
    assert {k: gk[k] for k in uncond["G_kwargs"] if k not in ("mapping_kwargs", "synthesis_kwargs")} == \
        {k: v for k, v in uncond["G_kwargs"].items() if k not in ("mapping_kwargs", "synthesis_kwargs")}
    for group in ("mapping_kwargs", "synthesis_kwargs"):
        assert uncond["G_kwargs"][group].items() <= gk[group].items()
    # D_stylegan2's own default group size, which the official converter loses.
    assert out["D_kwargs"]["epilogue_kwargs"]["mbstd_group_size"] == 4
    assert out["D_kwargs"]["channel_base"] == 1024 and out["D_kwargs"]["architecture"] == "resnet"


def test_tf_stylegan2_ada_pickle_conditional(fakes, tmp_path, cond):
    # The fixture's clamp/fp16 settings do not change tensors; only names and layouts are compared.
    out = read_network_file(_tf_pickle(fakes, tmp_path, cond, ada=True, synthesis_func="G_synthesis", old_numpy=False))
    for net in ("G", "G_ema", "D"):
        _same(out[net], cond[net])
    assert out["G_kwargs"]["c_dim"] == 10 and out["D_kwargs"]["c_dim"] == 10


def test_tf_unknown_option_is_refused(fakes, tmp_path, uncond):
    Network = _tf_kit(fakes)
    top, mapping, synthesis = _official_to_tf_g(uncond["G_ema"], 32)
    static = {"resolution": 32, "fmap_decay": 0.5}
    g = _tf_net(Network, "Gs", "G_main", static, top,
                {"mapping": _tf_net(Network, "m", "G_mapping", static, mapping),
                 "synthesis": _tf_net(Network, "s", "G_synthesis_stylegan2", static, synthesis)})
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps(g, protocol=3))
    with pytest.raises(UserError, match="fmap_decay=0.5"):
        read_network_file(path)


def test_stylegan1_tf_pickle_is_refused(fakes, tmp_path):
    Network = _tf_kit(fakes)
    marker = tmp_path / "pwned"
    src = f"open({str(marker)!r}, 'w').write('x')\ndef G_style(): pass\n"
    g = _tf_net(Network, "G", "G_style", {"resolution": 1024}, [("lod", np.float32(0))],
                {"mapping": _tf_net(Network, "G_mapping", "G_mapping", {}, [], src=src),
                 "synthesis": _tf_net(Network, "G_synthesis", "G_synthesis", {}, [], src=src)}, src=src)
    d = _tf_net(Network, "D", "D_basic", {}, [], src=src)
    path = tmp_path / "karras2019stylegan-ffhq-1024x1024.pkl"
    path.write_bytes(pickle.dumps((g, d, g), protocol=3))
    with pytest.raises(UserError, match="StyleGAN \\(v1\\)") as e:
        read_network_file(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


# --- rosinality ----------------------------------------------------------------------------------

def _official_to_rosinality_g(sd, res, w_dim):
    """rosinality model.Generator's state_dict names and layouts, from an official state dict."""
    out = {}
    i = 0
    while f"mapping.fc{i}.weight" in sd:
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"].clone()
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"].clone()
        i += 1
    out["input.input"] = sd["synthesis.b4.const"][None].clone()
    up_kernel = setup_filter([1, 3, 3, 1]) * 4

    def styled(dst, src, noise, up):
        out[dst + "conv.weight"] = sd[src + "weight"][None].clone()
        out[dst + "conv.modulation.weight"] = sd[src + "affine.weight"].clone()
        out[dst + "conv.modulation.bias"] = sd[src + "affine.bias"].clone()
        if up:
            out[dst + "conv.blur.kernel"] = up_kernel.clone()
        out[dst + "noise.weight"] = sd[src + "noise_strength"].reshape(1).clone()
        out[dst + "activate.bias"] = sd[src + "bias"].clone()
        out[f"noises.noise_{noise}"] = sd[src + "noise_const"][None, None].clone()

    def torgb(dst, src, up):
        if up:
            out[dst + "upsample.kernel"] = up_kernel.clone()
        out[dst + "conv.weight"] = sd[src + "weight"][None].clone()
        out[dst + "conv.modulation.weight"] = sd[src + "affine.weight"].clone()
        out[dst + "conv.modulation.bias"] = sd[src + "affine.bias"].clone()
        out[dst + "bias"] = sd[src + "bias"].reshape(1, -1, 1, 1).clone()

    styled("conv1.", "synthesis.b4.conv1.", 0, False)
    torgb("to_rgb1.", "synthesis.b4.torgb.", False)
    for k, r in enumerate([2 ** j for j in range(3, int(np.log2(res)) + 1)]):
        styled(f"convs.{2 * k}.", f"synthesis.b{r}.conv0.", 2 * k + 1, True)
        styled(f"convs.{2 * k + 1}.", f"synthesis.b{r}.conv1.", 2 * k + 2, False)
        torgb(f"to_rgbs.{k}.", f"synthesis.b{r}.torgb.", True)
    return out


def _official_to_rosinality_d(sd, res):
    down = setup_filter([1, 3, 3, 1])
    out = {"convs.0.0.weight": sd[f"b{res}.fromrgb.weight"], "convs.0.1.bias": sd[f"b{res}.fromrgb.bias"]}
    for i, r in enumerate([2 ** k for k in range(int(np.log2(res)), 2, -1)], start=1):
        out.update({f"convs.{i}.conv1.0.weight": sd[f"b{r}.conv0.weight"],
                    f"convs.{i}.conv1.1.bias": sd[f"b{r}.conv0.bias"],
                    f"convs.{i}.conv2.0.kernel": down.clone(),
                    f"convs.{i}.conv2.1.weight": sd[f"b{r}.conv1.weight"],
                    f"convs.{i}.conv2.2.bias": sd[f"b{r}.conv1.bias"],
                    f"convs.{i}.skip.0.kernel": down.clone(),
                    f"convs.{i}.skip.1.weight": sd[f"b{r}.skip.weight"]})
    out.update({"final_conv.0.weight": sd["b4.conv.weight"], "final_conv.1.bias": sd["b4.conv.bias"],
                "final_linear.0.weight": sd["b4.fc.weight"], "final_linear.0.bias": sd["b4.fc.bias"],
                "final_linear.1.weight": sd["b4.out.weight"], "final_linear.1.bias": sd["b4.out.bias"]})
    return {k: v.clone() for k, v in out.items()}


def test_rosinality_checkpoint(tmp_path, uncond):
    import argparse

    ckpt = {"g": _official_to_rosinality_g(uncond["G"], 32, 64),
            "d": _official_to_rosinality_d(uncond["D"], 32),
            "g_ema": _official_to_rosinality_g(uncond["G_ema"], 32, 64),
            "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0, 1]}]},
            "args": argparse.Namespace(size=32, n_mlp=2, latent=64, channel_multiplier=2),
            "ada_aug_p": 0.0}
    path = tmp_path / "050000.pt"
    torch.save(ckpt, path)
    out = read_network_file(path)
    assert out["format"] == "rosinality"
    # No latent_avg in a training checkpoint: w_avg is estimated, everything else is copied.
    assert any("latent_avg" in n for n in out["notes"])
    for net in ("G", "G_ema"):
        exp = OrderedDict((k, v) for k, v in uncond[net].items() if k != "mapping.w_avg")
        got = OrderedDict((k, v) for k, v in out[net].items() if k != "mapping.w_avg")
        _same(got, exp)
        assert out[net]["mapping.w_avg"].shape == (64,)
    _same(out["D"], uncond["D"])
    gk = out["G_kwargs"]
    assert generator_shapes(gk).keys() == uncond["G"].keys()
    assert gk["synthesis_kwargs"]["architecture"] == "skip" and gk["mapping_kwargs"]["lr_multiplier"] == 0.01
    assert discriminator_shapes(out["D_kwargs"]).keys() == uncond["D"].keys()


def test_rosinality_converted_weights_with_latent_avg(tmp_path, uncond):
    ckpt = {"g_ema": _official_to_rosinality_g(uncond["G_ema"], 32, 64), "latent_avg": uncond["G_ema"]["mapping.w_avg"]}
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save(ckpt, path)
    out = read_network_file(path)
    _same(out["G_ema"], uncond["G_ema"])
    assert "D" not in out


def test_rosinality_legacy_torch_format(tmp_path, uncond):
    # rosinality's published checkpoints predate torch 1.6's zip format.
    ckpt = {"g_ema": _official_to_rosinality_g(uncond["G_ema"], 32, 64), "latent_avg": uncond["G_ema"]["mapping.w_avg"],
            "d": _official_to_rosinality_d(uncond["D"], 32)}
    path = tmp_path / "550000.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    out = read_network_file(path)
    _same(out["G_ema"], uncond["G_ema"])
    _same(out["D"], uncond["D"])


def test_rosinality_missing_key_is_refused(tmp_path, uncond):
    g = _official_to_rosinality_g(uncond["G_ema"], 32, 64)
    del g["convs.3.conv.modulation.bias"]
    path = tmp_path / "broken.pt"
    torch.save({"g_ema": g, "latent_avg": uncond["G_ema"]["mapping.w_avg"]}, path)
    with pytest.raises(UserError, match="convs.3.conv.modulation.bias") as e:
        read_network_file(path)
    assert "\n" not in str(e.value)


# --- hostile and damaged files -------------------------------------------------------------------

class _Evil:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.Popen", "builtins.exec"])
def test_hostile_globals_are_refused_and_not_run(tmp_path, target):
    import builtins
    import os as os_mod
    import subprocess

    marker = tmp_path / "pwned"
    fn = {"os.system": os_mod.system, "builtins.eval": builtins.eval,
          "subprocess.Popen": subprocess.Popen, "builtins.exec": builtins.exec}[target]
    arg = {"os.system": f"touch {marker}", "subprocess.Popen": ["touch", str(marker)]}.get(
        target, f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "ffhq.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(fn, arg)}, protocol=4))
    with pytest.raises(UserError) as e:
        read_network_file(path)
    msg = str(e.value)
    assert "\n" not in msg and "not on genexp's allow-list" in msg
    assert target.split(".")[1] in msg
    assert not marker.exists()


def test_module_src_is_never_executed(fakes, tmp_path, uncond):
    marker = tmp_path / "pwned"
    src = f"open({str(marker)!r}, 'w').write('x')\nimport os\nos.system('touch {marker}')\n"
    out = read_network_file(_ada_pickle(fakes, tmp_path, uncond, src=src))
    assert out["format"] == "stylegan2-ada-pytorch"
    assert not marker.exists()


def test_hostile_global_inside_a_persistent_state(fakes, tmp_path, uncond):
    Persist, EasyDict = _persistent_kit(fakes)
    rec = _module_records(Persist, EasyDict, uncond["G_ema"], "Generator", uncond["G_kwargs"], ADA_SRC)
    marker = tmp_path / "pwned"
    rec.state["activation"] = _Evil(os.system, f"touch {marker}")
    path = tmp_path / "snap.pkl"
    path.write_bytes(pickle.dumps({"G_ema": rec}, protocol=4))
    with pytest.raises(UserError, match="os.system|posix.system"):
        read_network_file(path)
    assert not marker.exists()


def test_hostile_torch_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": {"x": _Evil(os.system, f"touch {marker}")}}, path)
    with pytest.raises(UserError, match="allow-list") as e:
        read_network_file(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_object_dtype_array_is_refused(fakes, tmp_path):
    Network = _tf_kit(fakes)
    g = _tf_net(Network, "Gs", "G_main", {}, [("dlatent_avg", np.array([1, "a"], dtype=object))])
    path = tmp_path / "obj.pkl"
    path.write_bytes(pickle.dumps(g, protocol=3))
    with pytest.raises(UserError, match="truncated or damaged") as e:
        read_network_file(path)
    assert "\n" not in str(e.value)


def test_truncated_and_foreign_files(fakes, tmp_path, uncond):
    good = _ada_pickle(fakes, tmp_path, uncond)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pkl"
    text.write_text("hello, not a network\n")
    other = tmp_path / "list.pkl"
    other.write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    genexp_like = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "step": 3}, genexp_like)
    cut_zip = tmp_path / "cut.pt"
    cut_zip.write_bytes(genexp_like.read_bytes()[:200])
    for path in (cut, text, other, genexp_like, cut_zip, tmp_path / "absent.pkl"):
        with pytest.raises(UserError) as e:
            read_network_file(path)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg, msg


# --- rosinality's forward pass on the mapped weights equals the official outputs ------------------
# A plain-torch transcription of rosinality model.py's computation (native upfirdn2d, unfused
# modulated conv, randomize_noise=False), so the rosinality layout built above is checked against
# what the official code computed, not only against the reader.

def _ros_upfirdn(x, k, up=1, pad=(0, 0)):
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(n, c, h * up, w * up)
        y[:, :, ::up, ::up] = x
        x = y
    x = torch.nn.functional.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return torch.nn.functional.conv2d(x, torch.flip(k, [0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def _ros_lrelu(x, b):
    return torch.nn.functional.leaky_relu(x + b.view(1, -1, *([1] * (x.ndim - 2))), 0.2) * 2 ** 0.5


def _ros_modconv(sd, p, x, w, demodulate=True, up=False):
    weight = sd[p + "conv.weight"][0]
    weight = weight / (weight[0].numel() ** 0.5)
    mw = sd[p + "conv.modulation.weight"]
    style = torch.nn.functional.linear(w, mw / mw.shape[1] ** 0.5, sd[p + "conv.modulation.bias"])
    x = x * style[:, :, None, None]
    if up:
        x = torch.nn.functional.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        x = _ros_upfirdn(x, sd[p + "conv.blur.kernel"], pad=(1, 1))
    else:
        x = torch.nn.functional.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:
        d = ((weight[None] * style[:, None, :, None, None]).square().sum((2, 3, 4)) + 1e-8).rsqrt()
        x = x * d[:, :, None, None]
    return x


def _ros_generator_forward(sd, z, n_mlp, n_up):
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(1, n_mlp + 1):
        wgt = sd[f"style.{i}.weight"]
        x = _ros_lrelu(torch.nn.functional.linear(x, wgt * (0.01 / wgt.shape[1] ** 0.5)), sd[f"style.{i}.bias"] * 0.01)

    def styled(p, h, noise, up=False):
        h = _ros_modconv(sd, p, h, x, up=up) + sd[p + "noise.weight"] * sd[f"noises.noise_{noise}"]
        return _ros_lrelu(h, sd[p + "activate.bias"])

    h = sd["input.input"].repeat(z.shape[0], 1, 1, 1)
    h = styled("conv1.", h, 0)
    skip = _ros_modconv(sd, "to_rgb1.", h, x, demodulate=False) + sd["to_rgb1.bias"]
    for k in range(n_up):
        h = styled(f"convs.{2 * k}.", h, 2 * k + 1, up=True)
        h = styled(f"convs.{2 * k + 1}.", h, 2 * k + 2)
        rgb = _ros_modconv(sd, f"to_rgbs.{k}.", h, x, demodulate=False) + sd[f"to_rgbs.{k}.bias"]
        skip = rgb + _ros_upfirdn(skip, sd[f"to_rgbs.{k}.upsample.kernel"], up=2, pad=(2, 1))
    return skip


def _ros_discriminator_forward(sd, img, n_blocks):
    def conv(p, h, stride=1, pad=None):
        wgt = sd[p]
        pad = wgt.shape[-1] // 2 if pad is None else pad
        return torch.nn.functional.conv2d(h, wgt / wgt[0].numel() ** 0.5, stride=stride, padding=pad)

    h = _ros_lrelu(conv("convs.0.0.weight", img), sd["convs.0.1.bias"])
    for i in range(1, n_blocks + 1):
        p = f"convs.{i}."
        out = _ros_lrelu(conv(p + "conv1.0.weight", h), sd[p + "conv1.1.bias"])
        out = _ros_upfirdn(out, sd[p + "conv2.0.kernel"], pad=(2, 2))
        out = _ros_lrelu(conv(p + "conv2.1.weight", out, stride=2, pad=0), sd[p + "conv2.2.bias"])
        skip = conv(p + "skip.1.weight", _ros_upfirdn(h, sd[p + "skip.0.kernel"], pad=(1, 1)), stride=2, pad=0)
        h = (out + skip) / 2 ** 0.5
    b, c, hh, ww = h.shape
    g = min(b, 4)
    s = h.view(g, -1, 1, c, hh, ww)
    s = torch.sqrt(s.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
    h = torch.cat([h, s.repeat(g, 1, hh, ww)], 1)
    h = _ros_lrelu(conv("final_conv.0.weight", h), sd["final_conv.1.bias"]).view(b, -1)
    w0, w1 = sd["final_linear.0.weight"], sd["final_linear.1.weight"]
    h = _ros_lrelu(torch.nn.functional.linear(h, w0 / w0.shape[1] ** 0.5), sd["final_linear.0.bias"])
    return torch.nn.functional.linear(h, w1 / w1.shape[1] ** 0.5, sd["final_linear.1.bias"])


@torch.no_grad()
def test_rosinality_layout_computes_the_official_function(uncond):
    g = _official_to_rosinality_g(uncond["G_ema"], 32, 64)
    img = _ros_generator_forward(g, uncond["z"], n_mlp=2, n_up=3)
    torch.testing.assert_close(img, uncond["img_const"], atol=2e-4, rtol=1e-4)
    d = _official_to_rosinality_d(uncond["D"], 32)
    logits = _ros_discriminator_forward(d, uncond["img_const"], n_blocks=3)
    torch.testing.assert_close(logits, uncond["d_logits"], atol=2e-4, rtol=1e-4)


def _tf_to_rosinality(top, mapping, synthesis, d_vars, n_up):
    """rosinality convert_weight.py's reading of TF variables (transcribed), an independent second
    converter: TF layout -> rosinality layout."""
    m, s, dv = dict(mapping), dict(synthesis), dict(d_vars)
    t = torch.from_numpy
    up_kernel, down_kernel = setup_filter([1, 3, 3, 1]) * 4, setup_filter([1, 3, 3, 1])
    g = {}
    i = 0
    while f"Dense{i}/weight" in m:
        g[f"style.{i + 1}.weight"], g[f"style.{i + 1}.bias"] = t(m[f"Dense{i}/weight"].T.copy()), t(m[f"Dense{i}/bias"])
        i += 1
    g["input.input"] = t(s["4x4/Const/const"])

    def modconv(src, dst, flip=False):
        w = t(np.ascontiguousarray(s[src + "/weight"].transpose(3, 2, 0, 1)))[None]
        g[dst + ".conv.weight"] = torch.flip(w, [3, 4]) if flip else w
        g[dst + ".conv.modulation.weight"] = t(s[src + "/mod_weight"].T.copy())
        g[dst + ".conv.modulation.bias"] = t(s[src + "/mod_bias"] + 1)
        g[dst + ".noise.weight"] = t(np.array([s[src + "/noise_strength"]]))
        g[dst + ".activate.bias"] = t(s[src + "/bias"])
        if flip:
            g[dst + ".conv.blur.kernel"] = up_kernel

    def torgb(src, dst):
        g[dst + ".conv.weight"] = t(np.ascontiguousarray(s[src + "/weight"].transpose(3, 2, 0, 1)))[None]
        g[dst + ".conv.modulation.weight"] = t(s[src + "/mod_weight"].T.copy())
        g[dst + ".conv.modulation.bias"] = t(s[src + "/mod_bias"] + 1)
        g[dst + ".bias"] = t(s[src + "/bias"].reshape(1, 3, 1, 1))

    torgb("4x4/ToRGB", "to_rgb1")
    modconv("4x4/Conv", "conv1")
    for k in range(n_up):
        r = 8 * 2 ** k
        torgb(f"{r}x{r}/ToRGB", f"to_rgbs.{k}")
        g[f"to_rgbs.{k}.upsample.kernel"] = up_kernel
        modconv(f"{r}x{r}/Conv0_up", f"convs.{2 * k}", flip=True)
        modconv(f"{r}x{r}/Conv1", f"convs.{2 * k + 1}")
    for j in range(2 * n_up + 1):
        g[f"noises.noise_{j}"] = t(s[f"noise{j}"])

    def conv(src, dst, bias=True, start=0):
        d[f"{dst}.{start}.weight"] = t(np.ascontiguousarray(dv[src + "/weight"].transpose(3, 2, 0, 1)))
        if bias:
            d[f"{dst}.{start + 1}.bias"] = t(dv[src + "/bias"])

    d = {}
    res = 8 * 2 ** (n_up - 1)
    conv(f"{res}x{res}/FromRGB", "convs.0")
    for i in range(1, n_up + 1):
        r = res // 2 ** (i - 1)
        conv(f"{r}x{r}/Conv0", f"convs.{i}.conv1")
        conv(f"{r}x{r}/Conv1_down", f"convs.{i}.conv2", start=1)
        conv(f"{r}x{r}/Skip", f"convs.{i}.skip", start=1, bias=False)
        d[f"convs.{i}.conv2.0.kernel"] = d[f"convs.{i}.skip.0.kernel"] = down_kernel
    conv("4x4/Conv", "final_conv")
    for j, src in enumerate(("4x4/Dense0", "Output")):
        d[f"final_linear.{j}.weight"] = t(dv[src + "/weight"].T.copy())
        d[f"final_linear.{j}.bias"] = t(dv[src + "/bias"])
    return g, d


@torch.no_grad()
def test_tf_layout_agrees_with_rosinalitys_converter(uncond):
    # The TF variables the TF test writes (inverse of legacy.py's mapping), read by rosinality's
    # converter rules and run with rosinality's computation, give the official outputs: the two
    # published converters agree on the TF layout this reader assumes.
    top, mapping, synthesis = _official_to_tf_g(uncond["G_ema"], 32)
    g, d = _tf_to_rosinality(top, mapping, synthesis, _official_to_tf_d(uncond["D"], 32), n_up=3)
    torch.testing.assert_close(_ros_generator_forward(g, uncond["z"], 2, 3), uncond["img_const"], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(_ros_discriminator_forward(d, uncond["img_const"], 3), uncond["d_logits"],
                               atol=2e-4, rtol=1e-4)


def _binunicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


@pytest.mark.parametrize("target", [b"dnnlib.util\nEasyDict\n", b"collections\nOrderedDict\n",
                                    b"dnnlib.tflib.network\nNetwork\n"])
def test_build_cannot_modify_allowed_globals(tmp_path, target):
    # GLOBAL x; BUILD (None, {"__setstate__": None}): pickle's slot-state path calls setattr on x,
    # which would patch the allowed class for every later load.
    raw = (b"\x80\x02c" + target + b"N}" + _binunicode("__setstate__") + b"Ns\x86b.")
    path = tmp_path / "patch.pkl"
    path.write_bytes(raw)
    with pytest.raises(UserError, match="truncated or damaged") as e:
        read_network_file(path)
    assert "\n" not in str(e.value)
    from genexp.pretrained import safe_pickle

    assert "__setstate__" in safe_pickle.EasyDictRecord.__dict__
    assert safe_pickle.TFNetworkRecord.__dict__["__setstate__"] is not None


def test_tf_build_module_src_is_never_executed(fakes, tmp_path, uncond, monkeypatch):
    marker = tmp_path / "pwned"
    original = _tf_net

    def with_payload(*args, **kwargs):
        kwargs["src"] = f"open({str(marker)!r}, 'w').write('x')\ndef G_main(): pass\n"
        return original(*args, **kwargs)

    monkeypatch.setattr(sys.modules[__name__], "_tf_net", with_payload)
    out = read_network_file(_tf_pickle(fakes, tmp_path, uncond))
    assert out["format"] == "tf-stylegan2"
    assert not marker.exists()
