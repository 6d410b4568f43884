# %% [markdown]
# # Complete identification, conditional queries, counterfactuals and credible intervals
#
# `ppltk.causal.effect_from_joint` first tries the fast paths (no effect, back-door,
# front-door comb disintegration).  When none applies it runs the complete Shpitser–Pearl
# **ID** algorithm on the latent projection of the graph (c-components and hedges), and
# **IDC** for conditional queries `P(y | do(x), z)`.  The answer is a number (one einsum per
# term on the observational joint) and a readable formula; a query that no data of this kind
# can answer is refused with the **hedge** that proves it.

# %%
import matplotlib.pyplot as plt
import networkx as nx
import torch

from ppltk._tutorial import fast_mode, save_figure
from ppltk.causal import (
    NotIdentifiableError,
    counterfactual,
    effect_from_joint,
    effect_posterior,
    interventional,
    pns_bounds,
    response_function_scm,
)

torch.set_num_threads(1)
FAST = fast_mode()


def random_tables(graph, seed):
    gen = torch.Generator().manual_seed(seed)
    cpts = {}
    for v in nx.topological_sort(graph):
        parents = tuple(sorted(graph.predecessors(v)))
        t = torch.rand(*(2,) * len(parents), 2, generator=gen, dtype=torch.float64) + 0.15
        cpts[v] = (parents, t / t.sum(-1, keepdim=True))
    return cpts


# %% [markdown]
# ## The napkin
#
# `W1 → W2 → X → Y` with hidden `U1` (confounding `W1`, `X`) and `U2` (confounding `W1`, `Y`).
# No back-door set and no front-door bridge exist, yet the effect is identified:
# `P(y | do(x)) = Σ_{w1} P(w1) P(x | w1, w2) P(y | w1, w2, x) / Σ_{w1} P(w1) P(x | w1, w2)`
# for any `w2`.  (y0 returns `P(Y | X)` here, which is wrong: compare the observational line.)

# %%
napkin = nx.DiGraph(
    [("W1", "W2"), ("W2", "X"), ("X", "Y"), ("U1", "W1"), ("U1", "X"), ("U2", "W1"), ("U2", "Y")]
)


def bern(p):
    return torch.tensor([1 - p, p], dtype=torch.float64)


# tables (parents in sorted order, child last): U2 drives W1 and Y, so X ← W2 ← W1 ← U2 → Y
# is an open back-door path, and adjusting for W1 would open X ← U1 → W1 ← U2 → Y
cpts = {
    "U1": ((), bern(0.5)),
    "U2": ((), bern(0.4)),
    "W1": (
        ("U1", "U2"),
        torch.stack([torch.stack([bern(0.1), bern(0.8)]), torch.stack([bern(0.3), bern(0.95)])]),
    ),
    "W2": (("W1",), torch.stack([bern(0.15), bern(0.85)])),
    "X": (
        ("U1", "W2"),
        torch.stack([torch.stack([bern(0.1), bern(0.7)]), torch.stack([bern(0.4), bern(0.9)])]),
    ),
    "Y": (
        ("U2", "X"),
        torch.stack([torch.stack([bern(0.2), bern(0.4)]), torch.stack([bern(0.6), bern(0.85)])]),
    ),
}
obs = ("W1", "W2", "X", "Y")
joint = interventional(napkin, cpts, obs)  # the observational joint of the true model
res = effect_from_joint(napkin, {"U1", "U2"}, joint, obs, ("Y",), {"X": 1}, return_details=True)
truth = interventional(napkin, cpts, ("Y",), {"X": 1})  # surgery on the true model
naive = joint.sum((0, 1))[1] / joint.sum((0, 1))[1].sum()
print(res.method, "|", res.formula)
print(f"P(Y=1 | do(X=1)) from the joint: {res.value[1]:.6f}, surgery on the model: {truth[1]:.6f}")
print(f"P(Y=1 | X=1) (observational):   {naive[1]:.6f}")
assert torch.allclose(res.value, truth, atol=1e-12)

# %% [markdown]
# Adding a hidden confounder of `X` and `Y` breaks identifiability; the error names the hedge,
# two c-forests `F ⊃ F'` with the same roots, `F` containing the treatment.

# %%
broken = napkin.copy()
broken.add_edges_from([("U3", "X"), ("U3", "Y")])
try:
    effect_from_joint(broken, {"U1", "U2", "U3"}, joint, obs, ("Y",), {"X": 1})
except NotIdentifiableError as err:
    print(str(err).split(". Fast paths")[0])

# %% [markdown]
# ## Conditional queries
#
# On the front-door graph (`X → M → Y`, hidden `U` confounding `X` and `Y`), the effect of `X`
# among units whose mediator ended up at `m`: IDC first notices that observing `M` is the same
# as setting it (rule 2), then identifies `P(y | do(x, m))`.

# %%
front = nx.DiGraph([("U", "X"), ("U", "Y"), ("X", "M"), ("M", "Y")])
fcpts = random_tables(front, 1)
fjoint = interventional(front, fcpts, ("X", "M", "Y"))
cond = effect_from_joint(
    front,
    {"U"},
    fjoint,
    ("X", "M", "Y"),
    ("Y",),
    {"X": 1},
    evidence={"M": 0},
    return_details=True,
)
print(cond.formula)
print(cond.value, interventional(front, fcpts, ("Y",), {"X": 1}, {"M": 0}))

# %% [markdown]
# ## Counterfactuals by twin-network surgery
#
# Counterfactuals need the noise: `response_function_scm` turns the front-door network into a
# structural model (one response-function noise per variable, independent coupling), and
# `counterfactual` evaluates the two-world network.  The effect of treatment on the treated,
# `P(Y_{x=1} = 1 | X = 0)`, equals `Σ_m P(m | x) P(y | x', m)` on this graph for *every*
# coupling; the probability of necessity depends on the coupling but stays within the
# Tian–Pearl bounds computed from data.

# %%
scm, scpts, exo = response_function_scm(front, fcpts)
ett = counterfactual(scm, scpts, exo, [{}, {"X": 1}], [("Y", 1)], {("X", 0): 0})
p_m_x = fjoint.sum(2) / fjoint.sum((1, 2))[:, None]
p_y_xm = fjoint / fjoint.sum(2, keepdim=True)
print("ETT by twin network:", ett, " formula:", (p_m_x[1][:, None] * p_y_xm[0]).sum(0))
pn = counterfactual(scm, scpts, exo, [{}, {"X": 0}], [("Y", 1)], {("X", 0): 1, ("Y", 0): 1})[0]
p_xy = fjoint.sum(1)
bounds = pns_bounds(
    float(interventional(front, fcpts, ("Y",), {"X": 1})[1]),
    float(interventional(front, fcpts, ("Y",), {"X": 0})[1]),
    float(p_xy[1, 1]),
    float(p_xy[0, 0]),
    float(p_xy[:, 1].sum()),
)
print(f"PN = {pn:.4f} within Tian-Pearl bounds {bounds['PN']}")

# %% [markdown]
# ## An effect with its credible interval from 1,000 samples
#
# From counts, `effect_posterior` draws joints from the Dirichlet posterior and pushes each
# through the napkin's ID formula: exact posterior draws of the effect, no MCMC.

# %%
gen = torch.Generator().manual_seed(0)
n_obs = 1000
cells = torch.multinomial(joint.flatten(), n_obs, replacement=True, generator=gen)
counts = torch.bincount(cells, minlength=joint.numel()).reshape(joint.shape).double()
post = effect_posterior(
    napkin, {"U1", "U2"}, counts, obs, ("Y",), {"X": 1}, n_draws=300 if FAST else 4000, seed=1
)
print(
    f"P(Y=1 | do(X=1)): posterior mean {post.mean[1]:.3f}, 90% interval "
    f"[{post.lower[1]:.3f}, {post.upper[1]:.3f}], truth {truth[1]:.3f}"
)
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.hist(post.draws[:, 1].numpy(), bins=40, density=True, alpha=0.7, label="posterior draws")
ax.axvline(float(truth[1]), color="k", ls="--", label="truth (surgery)")
ax.axvline(float(naive[1]), color="C3", ls=":", label="P(Y=1 | X=1)")
ax.axvspan(float(post.lower[1]), float(post.upper[1]), color="C0", alpha=0.15, label="90% CI")
ax.set_xlabel("P(Y=1 | do(X=1)) on the napkin")
ax.legend(fontsize=8)
save_figure(fig, "causal_identification_posterior")
