"""Time per ELBO gradient step of a latent SDE: ppltk vs torchsde, same networks, one thread.

Batch 128, 4 latent dims, 4 observed dims, 100 Euler steps (dt = 0.01 on [0, 1], 11
observations), K = 5 OU processes for MA-fBM. Cases:

* Brownian: ``LatentFractionalSDE(brownian=True)`` vs ``torchsde.sdeint(..., logqp=True)`` with
  diagonal noise (the latent SDE of Li et al., 2020).
* MA-fBM: ``LatentFractionalSDE(num_processes=5)`` vs torchsde on the augmented state
  ``(X, Y_1..Y_5)`` (24 dims) with general noise (4 Brownian motions).

torchsde runs with an explicit ``dt``, once with a ``BrownianInterval(dt=0.01)`` (its fast
setting, the headline ratio) and once with the default Brownian interval sdeint builds. Run:
``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sde.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torchsde

from ppltk.sde import LatentFractionalSDE

torch.set_num_threads(1)

BATCH, LATENT, OBS, K, DT = 128, 4, 4, 5, 0.01
TS = torch.linspace(0, 1, 11)


class TorchsdeLatent(torch.nn.Module):
    """torchsde view of a ppltk ``LatentFractionalSDE`` (shares its networks)."""

    sde_type = "ito"

    def __init__(self, model: LatentFractionalSDE, fractional: bool) -> None:
        super().__init__()
        self.model, self.fractional = model, fractional
        self.noise_type = "general" if fractional else "diagonal"
        self.ctx = None
        self.gammas = model.sde.gammas.float()

    def _u(self, t, x):
        i = min(int(torch.searchsorted(TS, t, right=True)) - 1, len(TS) - 2)
        return self.model.control(torch.cat([x, self.ctx[:, i]], -1))

    def _split(self, z):
        x = z[:, :LATENT]
        return x, z[:, LATENT:].reshape(-1, LATENT, self.gammas.numel())

    def _drift(self, t, z, with_control):
        if not self.fractional:
            sig = self.model.log_sigma.exp()
            u = self._u(t, z) if with_control else 0.0
            return self.model.prior_drift(z) + sig * u
        x, y = self._split(z)
        w = self.model.sde.omega().float()
        sig = self.model.log_sigma.exp()
        u = self._u(t, x) if with_control else torch.zeros_like(x)
        fx = self.model.prior_drift(x) + sig * (w.sum() * u - (y * (w * self.gammas)).sum(-1))
        fy = -self.gammas * y + u[..., None]
        return torch.cat([fx, fy.flatten(1)], -1)

    def f(self, t, z):
        return self._drift(t, z, True)

    def h(self, t, z):
        return self._drift(t, z, False)

    def g(self, t, z):
        sig = self.model.log_sigma.exp()
        if not self.fractional:
            return sig.expand_as(z)
        w = self.model.sde.omega().float()
        eye = torch.eye(LATENT, dtype=z.dtype)
        gx = torch.diag(sig * w.sum())
        gy = eye[:, None, :].expand(LATENT, self.gammas.numel(), LATENT).reshape(-1, LATENT)
        return torch.cat([gx, gy], 0).expand(z.shape[0], -1, -1)


def torchsde_elbo(model, sde: TorchsdeLatent, ys: torch.Tensor, seed: int, tuned: bool):
    """torchsde ELBO; ``tuned`` passes a ``BrownianInterval(dt=DT)`` (its fast configuration)."""
    torch.manual_seed(seed)
    ctx = model.encode(ys)
    sde.ctx = ctx
    loc, log_scale = model.qz0(ctx[:, 0]).chunk(2, -1)
    x0 = loc + log_scale.exp() * torch.randn_like(loc)
    if sde.fractional:
        x0 = torch.cat([x0, torch.zeros(BATCH, LATENT * K)], -1)
    bm = None
    if tuned:  # + 1 noise channel for the logqp state torchsde appends (diagonal case only)
        size = (BATCH, LATENT if sde.fractional else LATENT + 1)
        bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=size, dt=DT, entropy=seed)
    zs, logqp = torchsde.sdeint(sde, x0, TS, dt=DT, method="euler", logqp=True, bm=bm)
    pred = model.decoder(zs[..., :LATENT].transpose(0, 1))
    noise = model.log_obs_noise.exp()
    loglik = torch.distributions.Normal(pred, noise).log_prob(ys).sum((1, 2))
    q0 = torch.distributions.Normal(loc, log_scale.exp())
    kl0 = torch.distributions.kl_divergence(q0, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    return (loglik - kl0 - logqp.sum(0)).mean() / ys.shape[1]


def _time_once(loss_fn, params, r: int) -> float:
    for p in params:
        p.grad = None
    t0 = time.perf_counter()
    elbo = loss_fn(r)
    (-elbo).backward()
    return time.perf_counter() - t0, float(elbo.detach())


def _time_interleaved(fns: dict, params, repeats: int) -> dict:
    """Alternate the contenders each repeat (the machine is shared); the first call warms up."""
    times = {name: [] for name in fns}
    elbos = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            seconds, elbo = _time_once(fn, params, r)
            times[name].append(seconds)
            elbos[name].append(elbo)
    return {
        name: (statistics.median(t[1:]), min(t[1:]), statistics.fmean(elbos[name]))
        for name, t in times.items()
    }


def _bench_case(name: str, fractional: bool, ys: torch.Tensor, repeats: int) -> dict:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LatentFractionalSDE(
            OBS, LATENT, num_processes=K, brownian=not fractional, gamma_max=40.0
        )
    params = [p for p in model.parameters() if p.requires_grad]
    peer_sde = TorchsdeLatent(model, fractional)

    def ours(r):
        return model.elbo(TS, ys, dt=DT, method="euler", seed=r)

    def peer(tuned):
        return lambda r: torchsde_elbo(model, peer_sde, ys, r, tuned)

    res = _time_interleaved({"ours": ours, "tuned": peer(True)}, params, repeats)
    t_default = _time_interleaved({"default": peer(False)}, params, 1)["default"][0]
    (t_ours, min_ours, elbo_ours), (t_tuned, min_tuned, elbo_peer) = res["ours"], res["tuned"]
    return {
        "case": name, "ppltk_s": t_ours, "torchsde_s": t_tuned, "torchsde_default_bm_s": t_default,
        "speedup": t_tuned / t_ours, "speedup_of_minima": min_tuned / min_ours,
        "speedup_vs_default_bm": t_default / t_ours,
        "mean_elbo_ppltk": elbo_ours, "mean_elbo_torchsde": elbo_peer,
    }  # fmt: skip


def run(repeats: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    ys = torch.randn(BATCH, len(TS), OBS, generator=gen).cumsum(1) * 0.2
    cases = (("Brownian (diagonal noise)", False), ("MA-fBM K=5 (general noise)", True))
    return [_bench_case(name, fractional, ys, repeats) for name, fractional in cases]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rows = run(args.repeats)
    facts = {
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchsde": torchsde.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "setup": f"batch {BATCH}, latent {LATENT}, obs {OBS}, K {K}, 100 Euler steps, dt {DT}",
    }
    lines = [
        "| case | ppltk s/step | torchsde s/step (BrownianInterval dt) | speedup (medians) "
        "| speedup (minima) | torchsde s/step (default bm) | speedup |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['case']} | {r['ppltk_s']:.4f} | {r['torchsde_s']:.4f} | {r['speedup']:.2f}x "
          f"| {r['speedup_of_minima']:.2f}x | {r['torchsde_default_bm_s']:.3f} "
          f"| {r['speedup_vs_default_bm']:.1f}x |"
          for r in rows],
    ]  # fmt: skip
    table = "\n".join(lines)
    print(table)
    for r in rows:  # same model, same networks: the ELBO estimates must agree up to MC noise
        print(f"{r['case']}: mean ELBO ppltk {r['mean_elbo_ppltk']:.3f}, "
              f"torchsde {r['mean_elbo_torchsde']:.3f}")  # fmt: skip
    print(facts)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sde.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=2))
    header = "# Latent SDE ELBO gradient step: ppltk vs torchsde\n\n"
    (out / "sde.md").write_text(header + table + "\n\n" + json.dumps(facts) + "\n")


if __name__ == "__main__":
    main()
