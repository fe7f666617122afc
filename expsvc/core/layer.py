"""Layers and the sequential model.

Shapes: inputs ``(R, B, *in_shape)``, outputs ``(R, B, *out_shape)``; parameters ``(R, ...)``.  The replica
and batch axes stay implicit: when the model is built, each layer learns the per-sample shape of its input
and reports its output shape (:meth:`Layer.build_shape`), so ``linear(5)`` needs no ``in_features`` and
``conv2d(8, 3)`` no ``in_channels``.

Two ways to write a layer:

* **shape contract** — override ``build_shape(in_shape: tuple) -> tuple`` (images, anything not flat);
  raise :class:`ShapeError` with a reason when the input shape does not fit.
* **width contract** — override ``build(in_features: int) -> int`` (flat inputs ``(F,)`` only; how layers
  were written before shapes).  Such a layer keeps working on flat inputs; given an image it is refused at
  build time with one line saying to put ``flatten`` before it (or to implement ``build_shape``).

A layer that overrides neither (an activation) is elementwise: any shape in, the same shape out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from expsvc.core.params import Init, ParamBuffer, Parameter
from expsvc.core.rng import ReplicaRandom, roots_of

Shape = tuple[int, ...]
"""A per-sample shape: ``(F,)`` for flat inputs, ``(C, H, W)`` for images."""


class ShapeError(ValueError):
    """A layer cannot take the input shape it is given.  ``reason`` is one line; :class:`Sequential` adds
    the layer's position and the shapes (``position`` is 1-based, ``in_shape`` the offending input)."""

    def __init__(self, reason: str, position: int | None = None, layer: Layer | None = None,
                 in_shape: Shape | None = None) -> None:
        self.reason, self.position, self.layer, self.in_shape = reason, position, layer, in_shape
        super().__init__(f"layer {position} ({layer!r}): {reason}" if position is not None else reason)


def fmt_shape(shape: Shape | None) -> str:
    """``(1, 8, 8)``, ``(64,)``."""
    if shape is None:
        return "?"
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class Layer:
    """Base class of layers and activations: ``build`` declares parameters, ``forward``/``backward`` compute.

    Subclasses set ``name`` (the registry name) and implement :meth:`forward` and :meth:`backward`.
    ``backward(dy)`` receives ``dL/dy`` of the last ``forward`` and returns ``dL/dx``; it *adds* parameter
    gradients into ``param.grad``.
    """

    name: ClassVar[str] = ""
    gradcheck_shape: ClassVar[Shape] = (4,)
    """The per-sample input shape ``expsvc gradcheck`` uses unless told another (``--shape``)."""

    def __init__(self) -> None:
        self._params: list[Parameter] = []

    def param(self, name: str, shape: tuple[int, ...], init: Init, writes_grad: bool = False) -> Parameter:
        """Declare a parameter during :meth:`build`; the model allocates and initialises it.

        ``writes_grad=True`` promises that every backward after a ``zero_grad`` writes this gradient before
        adding to it (the ``zero_count`` protocol of :class:`~expsvc.core.params.ParamBuffer`), so
        ``zero_grad`` need not clear it.
        """
        if not hasattr(self, "_params"):
            self._params = []
        p = Parameter(name, shape, init, writes_grad)
        self._params.append(p)
        return p

    def parameters(self) -> list[Parameter]:
        """The trainable parameters declared at build time, in declaration order."""
        return [p for p in getattr(self, "_params", []) if p.trainable]

    def state_array(self, name: str, shape: tuple[int, ...], init: Init) -> Parameter:
        """Declare a non-trainable per-replica array (running statistics) during :meth:`build_shape`: saved
        and restored with the parameters, snapshotted when a replica stops, never updated by an optimizer."""
        if not hasattr(self, "_params"):
            self._params = []
        p = Parameter(name, shape, init, trainable=False)
        self._params.append(p)
        return p

    def states(self) -> list[Parameter]:
        """The state arrays declared by :meth:`build_shape`."""
        return [p for p in getattr(self, "_params", []) if not p.trainable]

    def build(self, in_features: int) -> int:
        """Width contract: declare parameters for flat inputs of width ``in_features``; return the output
        width.  (The default — not overridden — marks an elementwise layer; see :meth:`build_shape`.)"""
        return in_features

    def build_shape(self, in_shape: Shape) -> Shape:
        """Shape contract: declare parameters for per-sample inputs of ``in_shape``; return the output shape.

        The default adapts the width contract: a layer that does not override :meth:`build` is elementwise
        (shape unchanged); one that does gets ``in_shape[0]`` for a flat input and is refused otherwise.
        """
        if type(self).build is Layer.build:
            return tuple(in_shape)
        if len(in_shape) != 1:
            raise ShapeError(
                f"takes flat inputs (features,) but gets {fmt_shape(in_shape)}; put 'flatten' before it "
                "(a plugin layer that handles shapes implements build_shape(in_shape) -> out_shape)"
            )
        out = self.build(int(in_shape[0]))
        if isinstance(out, bool) or not isinstance(out, int | np.integer):
            raise ShapeError(f"build(in_features) must return the output width as an int, got {out!r}")
        return (int(out),)

    _random: ReplicaRandom | None = None
    _random_source: tuple[list[np.random.SeedSequence], int] | None = None

    @property
    def random(self) -> ReplicaRandom:
        """This layer's per-replica random streams (made on first use; see :class:`ReplicaRandom`): the only
        randomness a layer may use while training, so replicas stay independent and reproducible."""
        if self._random is None:
            if self._random_source is None:
                raise RuntimeError(f"{self!r}: random streams exist once the model is built")
            roots, index = self._random_source
            self._random = ReplicaRandom.for_component(roots, index)
        return self._random

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward_params(self, dy: np.ndarray) -> None:
        """Only the parameter gradients of :meth:`backward`: the model's first layer during training, whose
        ``dL/dx`` nobody needs.  The default calls :meth:`backward`; a layer whose input gradient costs real
        work (``linear``: one matmul) overrides this to skip it."""
        self.backward(dy)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Sequential:
    """Layers applied in order; ``backward`` runs them in reverse.  Owns the model's :class:`ParamBuffer`."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)
        self._first_with_params: int | None = None
        self.buffer: ParamBuffer | None = None
        self.in_shape: Shape | None = None
        self.out_shape: Shape | None = None
        self.shapes: list[Shape] = []

    @property
    def in_features(self) -> int | None:
        """The input width of a flat model (``None`` before build or for shaped inputs)."""
        return self.in_shape[0] if self.in_shape is not None and len(self.in_shape) == 1 else None

    @property
    def out_features(self) -> int | None:
        """The output width of a model with flat outputs."""
        return self.out_shape[0] if self.out_shape is not None and len(self.out_shape) == 1 else None

    def infer_shapes(self, in_shape: int | Shape) -> list[Shape]:
        """Every layer's input shape and the model's output shape (``len(layers) + 1`` shapes), declaring the
        layers' parameters on the way.  A misfit raises :class:`ShapeError` naming the layer, its position
        (1-based) and the shape it was given."""
        shape: Shape = (int(in_shape),) if isinstance(in_shape, int | np.integer) else tuple(int(s) for s in in_shape)
        shapes = [shape]
        for i, layer in enumerate(self.layers):
            layer._params = []
            try:
                out = layer.build_shape(shape)
            except ShapeError as err:
                raise ShapeError(err.reason, i + 1, layer, shape) from None
            shape = tuple(int(s) for s in out)
            if not shape or min(shape) < 1:
                raise ShapeError(f"its output shape would be {fmt_shape(shape)}: no size may be 0", i + 1, layer,
                                 shapes[-1])
            shapes.append(shape)
        return shapes

    def build(
        self,
        in_shape: int | Shape,
        rngs: Sequence[np.random.Generator],
        dtype: np.dtype | type = np.float64,
        random_roots: Sequence[np.random.SeedSequence] | None = None,
    ) -> Sequential:
        """Infer every layer's input shape, allocate one buffer for ``len(rngs)`` replicas, initialise it.

        ``in_shape`` is the per-sample input shape (an int means ``(in_shape,)``).  ``random_roots`` (one
        :class:`~numpy.random.SeedSequence` per replica, :func:`~expsvc.core.rng.component_roots` of the run
        seeds) roots the layers' training-time streams: layer ``i`` draws from child ``i`` of its replica's
        root.  Without it the roots derive from ``rngs``' own seed sequences (which are not advanced).
        """
        self.shapes = self.infer_shapes(in_shape)
        self.in_shape, self.out_shape = self.shapes[0], self.shapes[-1]
        roots = list(random_roots) if random_roots is not None else roots_of(rngs)
        params: list[Parameter] = []
        for i, layer in enumerate(self.layers):
            layer._random, layer._random_source = None, (roots, i)
            for p in layer._params:
                p.name = f"{i}.{layer.name or type(layer).__name__}.{p.name}"
                params.append(p)
        self._first_with_params = next((i for i, layer in enumerate(self.layers) if layer.parameters()), None)
        self.buffer = ParamBuffer(params, replicas=len(rngs), dtype=dtype)
        self.buffer.random_roots = roots
        self.buffer.initialize(rngs)
        return self

    @property
    def replicas(self) -> int:
        assert self.buffer is not None, "build the model first"
        return self.buffer.replicas

    def parameters(self) -> list[Parameter]:
        """The trainable parameters (what an optimizer updates)."""
        assert self.buffer is not None, "build the model first"
        return self.buffer.params

    def states(self) -> list[Parameter]:
        """The non-trainable state arrays (running statistics)."""
        assert self.buffer is not None, "build the model first"
        return self.buffer.states

    def tensors(self) -> list[Parameter]:
        """Parameters then state arrays: everything a trained model is made of (what is saved and loaded)."""
        return [*self.parameters(), *self.states()]

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dL/dx`` of the last forward's input; adds every parameter's gradient into its ``.grad``."""
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def backward_params(self, dy: np.ndarray) -> None:
        """Parameter gradients only (what training needs): the same as :meth:`backward` down to the first
        layer with parameters, which is asked for its parameter gradients alone; layers below it are skipped.
        Saves the input-gradient product of the first layer (a quarter of the backward FLOPs of a
        784-256-256-10 net)."""
        first = self._first_with_params
        if first is None:
            return
        layers = self.layers
        for i in range(len(layers) - 1, first, -1):
            dy = layers[i].backward(dy)
        layers[first].backward_params(dy)

    def zero_grad(self) -> None:
        assert self.buffer is not None, "build the model first"
        self.buffer.zero_grad()

    def __repr__(self) -> str:
        return "Sequential(" + ", ".join(repr(layer) for layer in self.layers) + ")"
