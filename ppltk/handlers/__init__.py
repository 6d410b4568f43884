"""ppltk's own poutine messengers: tempering, particle vectorisation, replay and suspension."""

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
