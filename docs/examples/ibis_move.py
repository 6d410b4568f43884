"""A particle filter with an MCMC move (IBIS, Chopin 2002) from ppltk's public blocks.

A static parameter :math:`\\theta` observed one data point at a time is a Feynman–Kac model
whose move :math:`M_t` is an MCMC kernel leaving :math:`p(\\theta \\mid y_{0:t-1})` invariant
and whose potential is :math:`G_t = p(y_t \\mid \\theta)`.
"""

from ppltk.mcmc import RandomWalkMH
from ppltk.smc import FeynmanKac, init, mcmc_move, population_params, step


class IBIS(FeynmanKac):
    def __init__(self, log_prior, log_lik_t, num_steps, sample_prior, num_moves=5):
        self.log_prior, self.log_lik_t, self.sample_prior = log_prior, log_lik_t, sample_prior
        self.num_steps, self.num_moves, self.kernel = num_steps, num_moves, RandomWalkMH()

    def M0(self, shape, generator):
        return self.sample_prior(shape[-1], generator)

    def M(self, t, xp, generator):  # invariant for p(theta | y_{0:t-1})
        def target(u):
            return self.log_prior(u) + sum(self.log_lik_t(s, u) for s in range(t))

        params = population_params(self.kernel, xp)
        return mcmc_move(self.kernel, target, xp, self.num_moves, generator, params)[0].position

    def logG(self, t, xp, x):
        return self.log_lik_t(t, x)


def run_ibis(fk, num_particles, generator):
    state, _ = init(fk, num_particles, generator)
    while not fk.done(state.t):
        state, _ = step(fk, state, generator, ess_threshold=0.5)
    return state
