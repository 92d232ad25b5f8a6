"""Makes tests/data/edm_reference.pt: EDM's official training/networks.py, loss.py and generate.py
(github.com/NVlabs/edm) on tiny random nets and fixed inputs, on a CPU. Not a test and not imported by one:
run it in a checkout of NVlabs/edm (cd edm && PYTHONPATH=. python /path/to/edm_make_reference.py), then copy
the edm_reference.pt it writes there.
"""
import os

import torch
from generate import ablation_sampler, edm_sampler
from training.loss import EDMLoss, VELoss, VPLoss
from training.networks import EDMPrecond, VEPrecond, VPPrecond

NETS = {
    "ddpmpp": dict(embedding_type="positional", encoder_type="standard", decoder_type="standard",
                   channel_mult_noise=1, resample_filter=[1, 1]),
    "ncsnpp": dict(embedding_type="fourier", encoder_type="residual", decoder_type="standard",
                   channel_mult_noise=2, resample_filter=[1, 3, 3, 1]),
}
COMMON = dict(img_resolution=8, img_channels=2, label_dim=3, model_type="SongUNet", model_channels=4,
              channel_mult_emb=2, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)

out = {"common": {k: v for k, v in COMMON.items() if k != "model_type"}, "nets": {}}
g = torch.Generator().manual_seed(123)
x = torch.randn(3, 2, 8, 8, generator=g)
sigma = torch.tensor([0.01, 0.7, 30.0])
labels = torch.eye(3)[[2, 0, 1]]
latents = torch.randn(2, 2, 8, 8, generator=g)
sample_labels = torch.eye(3)[[1, 2]]
out.update(x=x, sigma=sigma, labels=labels, latents=latents, sample_labels=sample_labels)

def recorded(seed):
    """randn_like drawing from a seeded generator, each draw kept."""
    gen = torch.Generator().manual_seed(seed)
    draws = []
    def randn_like(t):
        d = torch.randn(t.shape, generator=gen, dtype=t.dtype)
        draws.append(d.clone())
        return d
    return randn_like, draws

for i, (name, kw) in enumerate(NETS.items()):
    torch.manual_seed(1000 + i)
    edm = EDMPrecond(**COMMON, **kw).eval()
    with torch.no_grad():  # off the near-zero init of the last layers, so every weight shows in D
        for p in edm.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    vp = VPPrecond(**COMMON, **kw).eval()
    vp.load_state_dict(edm.state_dict())
    ve = VEPrecond(**COMMON, **kw).eval()
    ve.load_state_dict(edm.state_dict())
    state = edm.state_dict()  # one flat tensor (many small ones cost more in a .pt than their numbers)
    rec = {"kwargs": kw, "state_keys": list(state), "state_shapes": [list(v.shape) for v in state.values()],
           "state_flat": torch.cat([v.flatten() for v in state.values()])}
    with torch.no_grad():
        for pname, net in (("edm", edm), ("vp", vp), ("ve", ve)):
            rec[f"D_{pname}"] = net(x, sigma, labels)
        # losses: the RNG draws (sigma's normal / uniform first, then the noise), replayed by genexp
        for pname, net, loss_fn in (("edm", edm, EDMLoss()), ("vp", vp, VPLoss()), ("ve", ve, VELoss())):
            torch.manual_seed(7)
            rec[f"loss_{pname}"] = loss_fn(net, x, labels)
            torch.manual_seed(7)
            first = torch.randn([3, 1, 1, 1]) if pname == "edm" else torch.rand([3, 1, 1, 1])
            rec[f"loss_{pname}_draw"] = first
            rec[f"loss_{pname}_noise"] = torch.randn_like(x)
        rec["heun4"] = edm_sampler(edm, latents, sample_labels, num_steps=4)
        rec["heun4_vp"] = edm_sampler(vp, latents, sample_labels, num_steps=4)
        rec["euler4"] = ablation_sampler(edm, latents, sample_labels, num_steps=4, solver="euler")
        randn_like, draws = recorded(5)
        rec["stochastic4"] = edm_sampler(edm, latents, sample_labels, randn_like=randn_like, num_steps=4,
                                         S_churn=10, S_min=0.05, S_max=50, S_noise=1.003)
        rec["stochastic4_noise"] = torch.stack(draws)
    out["nets"][name] = rec
torch.save(out, "edm_reference.pt", _use_new_zipfile_serialization=False)
print(os.path.getsize("edm_reference.pt"))
for name, rec in out["nets"].items():
    print(name, rec["state_flat"].numel(), float(rec["loss_edm"].sum()), rec["heun4"].abs().mean().item())
