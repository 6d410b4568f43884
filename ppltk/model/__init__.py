"""Model bridge: a Pyro model as a batched log-density on a flat unconstrained vector."""

from ppltk.model.bridge import ModelBridge, SiteInfo

__all__ = ["ModelBridge", "SiteInfo"]
