"""ppltk's own poutine messengers: tempering, particle vectorisation, replay, suspension, and
the coroutine and lazily re-indexed particle tensors that run a program once for SMC."""

from ppltk.handlers.coroutine import ObservationSuspender, SuspendedProgram
from ppltk.handlers.lazy import Lineage, ParticleTensor
from ppltk.handlers.particles import (
    PARTICLE_PLATE,
    LogWeightMessenger,
    particle_plate,
    per_particle,
    vectorize_particles,
)
from ppltk.handlers.replay import ReplayValuesMessenger, Suspended, SuspendMessenger
from ppltk.handlers.tempering import TemperMessenger, temper

__all__ = [
    "Lineage",
    "ObservationSuspender",
    "ParticleTensor",
    "SuspendedProgram",
    "PARTICLE_PLATE",
    "LogWeightMessenger",
    "ReplayValuesMessenger",
    "SuspendMessenger",
    "Suspended",
    "TemperMessenger",
    "particle_plate",
    "per_particle",
    "temper",
    "vectorize_particles",
]
