"""Layers and the sequential model.

Shapes: inputs ``(R, B, F_in)``, outputs ``(R, B, F_out)``; parameters ``(R, ...)``.  A layer learns its
input width when the model is built (``linear(5)`` needs no ``in_features``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from expsvc.core.params import Init, ParamBuffer, Parameter


class Layer:
    """Base class of layers and activations: ``build`` declares parameters, ``forward``/``backward`` compute.

    Subclasses set ``name`` (the registry name) and implement :meth:`forward` and :meth:`backward`.
    ``backward(dy)`` receives ``dL/dy`` of the last ``forward`` and returns ``dL/dx``; it *adds* parameter
    gradients into ``param.grad``.
    """

    name: ClassVar[str] = ""

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
        """The parameters declared by :meth:`build`, in declaration order."""
        return list(getattr(self, "_params", []))

    def build(self, in_features: int) -> int:
        """Declare parameters for inputs of width ``in_features``; return the output width."""
        return in_features

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
        self.in_features: int | None = None
        self.out_features: int | None = None

    def build(
        self,
        in_features: int,
        rngs: Sequence[np.random.Generator],
        dtype: np.dtype | type = np.float64,
    ) -> Sequential:
        """Infer every layer's input width, allocate one buffer for ``len(rngs)`` replicas, initialise it."""
        width = int(in_features)
        self.in_features = width
        params: list[Parameter] = []
        for i, layer in enumerate(self.layers):
            layer._params = []
            width = int(layer.build(width))
            for p in layer.parameters():
                p.name = f"{i}.{layer.name or type(layer).__name__}.{p.name}"
                params.append(p)
        self.out_features = width
        self._first_with_params = next((i for i, layer in enumerate(self.layers) if layer.parameters()), None)
        self.buffer = ParamBuffer(params, replicas=len(rngs), dtype=dtype)
        self.buffer.initialize(rngs)
        return self

    @property
    def replicas(self) -> int:
        assert self.buffer is not None, "build the model first"
        return self.buffer.replicas

    def parameters(self) -> list[Parameter]:
        assert self.buffer is not None, "build the model first"
        return self.buffer.params

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
