r"""Lazily re-indexed particle tensors: resampling a program's live state without touching it.

A program run once for :math:`N` particles holds ``[N, ...]`` tensors in its local variables.
When the SMC driver resamples (:math:`x^i \leftarrow x^{a^i}`) it cannot reach those variables.
Instead every tensor that carries the particle dim is a :class:`ParticleTensor` that records the
*generation* (number of resamplings so far) its values belong to; the shared :class:`Lineage`
keeps the ancestor map of each resampling. When the tensor is next used in a torch operation,
``__torch_function__`` gathers it through the composed ancestor map

.. math:: \mathrm{idx}_{g \to G} = a_{g} \circ a_{g+1} \circ \dots \circ a_{G-1},
          \qquad x_{\text{now}}^i = x^{\mathrm{idx}_{g\to G}(i)},

and stores the result in place (copy on first use, after Birch's lazy particle copies), so a
variable read every step costs one :math:`O(N)` gather per resampling and an unused one costs
nothing. The result of an operation on particle tensors is a particle tensor of the current
generation when its leading dim is the particle dim.

Conventions and what is refused (:class:`~ppltk.errors.ModelStructureError`):

* the particle dim is dim 0 (it is, for every value sampled inside the outermost particle
  plate of :func:`~ppltk.handlers.particle_plate`);
* a tensor whose particle dim was moved away from dim 0 (``x.T``, ``torch.stack(xs)``) may be
  used until the next resampling (distributions do such transposes internally) but not after
  it; writing particle values in place into a plain tensor is refused;
* Python control flow on a particle's value (``if x > 0``) fails as for any batched tensor.

Preserves: the values a program sees are exactly those of its resampled particle system.
"""

from __future__ import annotations

import torch

from ppltk.errors import ModelStructureError

__all__ = ["Lineage", "ParticleTensor", "as_particles", "plain"]


class Lineage:
    """The ancestry of one particle system: one ancestor map ``[N]`` per resampling."""

    def __init__(self, num_particles: int) -> None:
        self.num_particles = num_particles
        self.ancestors: list[torch.Tensor] = []
        self._composed: dict[int, torch.Tensor] = {}
        self.gathers = 0  # number of tensor gathers done (tests count them)

    @property
    def generation(self) -> int:
        return len(self.ancestors)

    def resample(self, ancestors: torch.Tensor) -> None:
        """Record :math:`x^i \\leftarrow x^{a^i}` for every particle tensor of this lineage."""
        if ancestors.shape != (self.num_particles,):
            raise ModelStructureError(
                f"Expected ancestors shaped [{self.num_particles}], but found "
                f"{list(ancestors.shape)}"
            )
        self.ancestors.append(ancestors)
        self._composed = {}

    def index_from(self, generation: int) -> torch.Tensor:
        """Composed ancestor indices taking generation ``generation`` to the current one."""
        cache = self._composed
        if generation in cache:
            return cache[generation]
        # walk down from the nearest composed generation above, caching every level, so
        # bringing tensors of all G generations up to date costs O(N G), not O(N G^2)
        g = generation + 1
        while g < self.generation and g not in cache:
            g += 1
        idx = cache.get(g)
        for level in range(g - 1, generation - 1, -1):
            idx = self.ancestors[level] if idx is None else self.ancestors[level][idx]
            cache[level] = idx
        return idx

    def bring_up_to_date(self, data: torch.Tensor, generation: int) -> torch.Tensor:
        """``data`` (made at ``generation``) gathered to the current generation along dim 0."""
        if generation == self.generation:
            return data
        self.gathers += 1
        return data.index_select(0, self.index_from(generation).to(data.device))


class ParticleTensor(torch.Tensor):
    """A tensor whose dim 0 indexes particles of a :class:`Lineage` (see module docs)."""

    _lineage: Lineage
    _generation: int
    _data: torch.Tensor
    _displaced: bool

    @staticmethod
    def wrap(data: torch.Tensor, lineage: Lineage, displaced: bool = False) -> ParticleTensor:
        out = torch.Tensor._make_subclass(ParticleTensor, data, data.requires_grad)
        out._lineage, out._generation, out._data = lineage, lineage.generation, data
        out._displaced = displaced
        return out

    def current(self) -> torch.Tensor:
        """The values at the lineage's current generation, as a plain tensor (cached)."""
        lineage = self._lineage
        if self._generation != lineage.generation:
            if self._displaced:
                raise ModelStructureError(
                    "Expected the particle dim to stay at dim 0 in values kept across an "
                    f"observation, but found a tensor shaped {list(self._data.shape)} with the "
                    "particles in another dim used after a resampling, which could not re-index "
                    "it. Keep the particle dim leftmost (stack/cat along dim=-1, no transposes "
                    "of particle tensors) or use smc(..., path='replay')."
                )
            self._data = lineage.bring_up_to_date(self._data, self._generation)
            self._generation = lineage.generation
        return self._data

    def __repr__(self, *, tensor_contents=None) -> str:
        return f"ParticleTensor({self.current()!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in _METADATA or getattr(func, "__self__", None) in _METADATA:
            # shape, dtype, device...: the same for the wrapper and its data; no gather
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        found: list[ParticleTensor] = []
        args = _unwrap(args, found)
        if kwargs:
            kwargs = {k: _unwrap(v, found) for k, v in kwargs.items()}
        else:
            kwargs = {}
        if not found:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        inplace = func is torch.Tensor.__setitem__ or _is_inplace(func)
        if inplace:
            _check_inplace(func, args, found)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if inplace:
            return found[0] if out is args[0] else out
        return _rewrap(out, found[0]._lineage, func)


_METADATA = frozenset(
    [
        torch.Tensor.shape,
        torch.Tensor.dtype,
        torch.Tensor.device,
        torch.Tensor.ndim,
        torch.Tensor.layout,
        torch.Tensor.is_cuda,
        torch.Tensor.requires_grad,
        torch.Tensor.size,
        torch.Tensor.dim,
        torch.Tensor.numel,
        torch.Tensor.is_floating_point,
        torch.Tensor.__len__,
    ]
)
"""Tensor attributes and methods that read metadata only (gathering along dim 0 keeps it)."""


def _unwrap(x, found: list):
    """Plain current tensors in place of particle tensors (in tuples/lists, recursively)."""
    if isinstance(x, ParticleTensor):
        found.append(x)
        return x.current()
    kind = type(x)
    if kind is tuple or kind is list:
        out = None
        for i, v in enumerate(x):
            w = _unwrap(v, found) if isinstance(v, (ParticleTensor, tuple, list)) else v
            if w is not v:
                out = list(x) if out is None else out
                out[i] = w
        if out is not None:
            return tuple(out) if kind is tuple else out
    return x


def _is_inplace(func) -> bool:
    name = getattr(func, "__name__", "")
    return name.endswith("_") and not name.endswith("__")


def _check_inplace(func, args, found) -> None:
    """Refuse writing particle values in place into a tensor that is not a particle tensor."""
    if not (func is torch.Tensor.__setitem__ or _is_inplace(func)) or not args:
        return
    target = args[0]
    if isinstance(target, torch.Tensor) and not any(target is f._data for f in found):
        raise ModelStructureError(
            f"Expected particle values to stay in particle tensors, but found `{func.__name__}` "
            "writing them in place into a plain tensor (created without the particle dim), "
            "which resampling cannot re-index. Build the tensor from the particle values "
            "(e.g. torch.stack(..., dim=-1)) or use smc(..., path='replay')."
        )


def _rewrap(out, lineage: Lineage, func):
    """Particle tensors for outputs with the particle dim first; an output with the particles
    in another dim (a transpose inside a distribution, say) is *displaced*: usable until the
    next resampling, refused after it."""
    if type(out) in (tuple, list):
        return type(out)(_rewrap(o, lineage, func) for o in out)
    if not isinstance(out, torch.Tensor) or out.ndim == 0:
        return out
    n = lineage.num_particles
    if out.shape[0] == n:
        return ParticleTensor.wrap(out, lineage)
    if n > 1 and n in out.shape:
        return ParticleTensor.wrap(out, lineage, displaced=True)
    return out


def as_particles(value, lineage: Lineage):
    """Wrap ``value`` as a particle tensor when its dim 0 has the lineage's size."""
    if isinstance(value, ParticleTensor) or not isinstance(value, torch.Tensor):
        return value
    if value.ndim and value.shape[0] == lineage.num_particles:
        return ParticleTensor.wrap(value, lineage)
    return value


def plain(value):
    """The current plain tensor behind a particle tensor (other values pass through)."""
    return value.current() if isinstance(value, ParticleTensor) else value
