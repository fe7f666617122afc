"""Regenerate the PyTorch reference fixtures that prove expsvc's built-ins are torch-conformant.

The test suite never imports torch: it compares expsvc against the numbers this script stores.  Only this
script needs torch, and only torch 2.13.0 CPU (the version the conformance doc was checked against)::

    pip install torch==2.13.0          # CPU wheel; add --index-url https://download.pytorch.org/whl/cpu
                                       # to avoid pulling the CUDA build on Linux
    python scripts/make_torch_fixtures.py            # writes tests/fixtures/torch/
    python scripts/make_torch_fixtures.py --out DIR  # somewhere else

Everything is deterministic: inputs, the dataset and the batch orders come from fixed numpy seeds, the
initial parameters from ``torch.manual_seed(0)``, torch runs single-threaded in float64 (float32 where
stated), optimizers use ``foreach=False`` (the single-tensor code path the built-ins follow), and the
``.npz`` archives are written with fixed zip timestamps, so re-running reproduces the files byte for byte
on the same machine (reductions in BLAS/SIMD kernels may differ by an ulp on other CPUs).

Files written (all small, compressed):

``manifest.json``
    torch/numpy versions, CPU capability, the 2-5-3-1 run configurations (optimizer, scheduler, lr) and
    the component cases (registry name, constructor kwargs) with the keys of their arrays.
``net_2531.npz``
    The 2-5-3-1 net, Linear(2,5)-Tanh-Linear(5,3)-Tanh-Linear(3,1) with BCEWithLogitsLoss(mean), batch 50,
    400 epochs x 5 steps = 2,000 steps: ``x`` (240, 2) and ``y`` (240, 1) (the last batch of every epoch
    has 40 samples), ``init`` (37,) flat initial parameters in expsvc buffer order (each tensor flattened in
    C order: W1, b1, W2, b2, W3, b3), ``perms`` (400, 240) the per-epoch batch orders,
    ``checkpoint_steps``; per run ``<dtype>/<run>/losses`` (2000,) per-step losses,
    ``<dtype>/<run>/params`` (len(checkpoint_steps), 37) parameters after those steps, and for scheduled
    runs ``<dtype>/<run>/lrs`` (400,) the learning rate torch used in each epoch.
``components.npz``
    Per component case ``<case>/<array>``: inputs, targets, upstream gradients, torch outputs and
    gradients of layers, activations and losses (float64; Linear also float32).
``schedulers.json``
    torch's (recursive) per-epoch learning rates for StepLR and CosineAnnealingLR, including epochs past
    ``T_max``.
``shaped.npz``
    The shaped layers and BCELoss, float64, case by case (``manifest["shaped"]``): inputs ``x`` (images
    NCHW), upstream gradients ``g``, parameters, torch's ``out``, ``dx`` and ``d<param>``; batch norm also
    the running statistics before (``running_*``) and after (``new_running_*``) the pass; dropout the mask
    torch drew (``mask``, 0/1) so expsvc can be given the same one.
``cnn_digits.npz``
    The reference CNN (conv(8,3,p1)-relu-maxpool-conv(16,3,p1)-relu-maxpool-flatten-linear(10)),
    cross-entropy, AdamW lr 1e-3, float64, batch 64, on the first 320 training images of ``digits`` (the
    test rebuilds them with scikit-learn): ``init`` flat initial parameters in expsvc order, ``perms``
    (100, 320) per-epoch orders, ``losses`` (500,) and ``params`` at ``checkpoint_steps``.
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

EXPECTED_TORCH = "2.13.0"
N_POINTS, BATCH, EPOCHS = 240, 50, 400
CHECKPOINT_STEPS = (1, 5, 50, 500, 1000, 2000)
OUT_DEFAULT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch"

# name -> (expsvc optimizer registry name, expsvc kwargs, scheduler or None).  lr is chosen so the net
# actually trains in 2,000 steps (the loss falls from ~0.7 to ~0.3) without leaving the smooth regime.
RUNS: dict[str, dict[str, Any]] = {
    "mini_bgd": {"optimizer": "mini_bgd", "kwargs": {"lr": 0.05}},
    "sgd_momentum": {"optimizer": "sgd", "kwargs": {"lr": 0.02, "momentum": 0.9}},
    "sgd_nesterov_wd": {
        "optimizer": "sgd",
        "kwargs": {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    },
    "sgd_dampening": {"optimizer": "sgd", "kwargs": {"lr": 0.02, "momentum": 0.9, "dampening": 0.5}},
    "adam": {"optimizer": "adam", "kwargs": {"lr": 0.01}},
    "adam_l2": {"optimizer": "adam", "kwargs": {"lr": 0.01, "weight_decay": 1e-2}},
    "adam_amsgrad": {"optimizer": "adam", "kwargs": {"lr": 0.01, "amsgrad": True}},
    "adamw": {"optimizer": "adamw", "kwargs": {"lr": 0.01}},
    "adamw_amsgrad": {"optimizer": "adamw", "kwargs": {"lr": 0.01, "amsgrad": True}},
    "adamw_steplr": {
        "optimizer": "adamw",
        "kwargs": {"lr": 0.01},
        "scheduler": {"name": "step", "kwargs": {"step_size": 100, "gamma": 0.5}},
    },
    "adamw_cosine": {
        "optimizer": "adamw",
        "kwargs": {"lr": 0.01},
        "scheduler": {"name": "cosine", "kwargs": {"t_max": 150}},
    },
}
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps so reruns are byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def make_dataset() -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian blobs in 2-D with a few flipped labels: 240 points, labels 0/1 ``(N, 1)``."""
    rng = np.random.default_rng(2531)
    half = N_POINTS // 2
    x = np.concatenate([rng.normal((-1.0, -0.5), 0.9, (half, 2)), rng.normal((1.0, 0.8), 0.9, (half, 2))])
    y = np.concatenate([np.zeros(half), np.ones(half)])
    flip = rng.choice(N_POINTS, size=8, replace=False)
    y[flip] = 1.0 - y[flip]
    return x, y[:, None]


def make_net() -> nn.Sequential:
    """The 2-5-3-1 tanh net."""
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1))


def flat_params(net: nn.Module) -> np.ndarray:
    """All parameters as one float64 vector in expsvc buffer order."""
    return np.concatenate([p.detach().to(torch.float64).reshape(-1).numpy() for p in net.parameters()])


def load_flat(net: nn.Module, flat: np.ndarray) -> None:
    """Copy a flat vector into ``net``'s parameters."""
    offset = 0
    with torch.no_grad():
        for p in net.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(flat[offset : offset + n].reshape(p.shape)).to(p.dtype))
            offset += n


def torch_optimizer(spec: dict[str, Any], params: Any) -> torch.optim.Optimizer:
    """The torch optimizer matching an expsvc optimizer spec, on the single-tensor code path."""
    kw = dict(spec["kwargs"])
    name = spec["optimizer"]
    if name == "mini_bgd":
        return torch.optim.SGD(params, lr=kw["lr"], foreach=False)
    if name == "sgd":
        return torch.optim.SGD(params, foreach=False, **kw)
    if name == "adam":
        return torch.optim.Adam(params, foreach=False, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, foreach=False, **kw)
    raise ValueError(name)


def torch_scheduler(spec: dict[str, Any] | None, opt: torch.optim.Optimizer) -> Any:
    """The torch LR scheduler matching an expsvc scheduler spec (or None)."""
    if spec is None:
        return None
    kw = spec["kwargs"]
    if spec["name"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=kw["step_size"], gamma=kw.get("gamma", 0.1))
    if spec["name"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=kw["t_max"], eta_min=kw.get("eta_min", 0.0)
        )
    raise ValueError(spec["name"])


def train_epoch(net: Any, opt: Any, loss_fn: Any, x: Any, y: Any, perm: np.ndarray, batch: int,
                checkpoints: Any, losses: list[float], params: list[np.ndarray]) -> None:
    """One epoch of minibatches in the order ``perm`` (the last batch may be short): each step's loss is
    appended to ``losses`` and the flat parameters to ``params`` after every step counted in ``checkpoints``."""
    order = torch.from_numpy(perm.astype(np.int64))
    for start in range(0, len(perm), batch):
        idx = order[start : start + batch]
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if len(losses) in checkpoints:
            params.append(flat_params(net))


def train_run(
    spec: dict[str, Any],
    dtype: torch.dtype,
    x: np.ndarray,
    y: np.ndarray,
    init: np.ndarray,
    perms: np.ndarray,
) -> dict[str, np.ndarray]:
    """One 2,000-step run in torch: per-step losses, checkpointed parameters, per-epoch lrs."""
    net = make_net().to(dtype)
    load_flat(net, init)
    xt, yt = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
    loss_fn = nn.BCEWithLogitsLoss()
    opt = torch_optimizer(spec, net.parameters())
    sched = torch_scheduler(spec.get("scheduler"), opt)
    losses: list[float] = []
    params: list[np.ndarray] = []
    lrs = []
    for epoch in range(EPOCHS):
        lrs.append(opt.param_groups[0]["lr"])
        train_epoch(net, opt, loss_fn, xt, yt, perms[epoch], BATCH, CHECKPOINT_STEPS, losses, params)
        if sched is not None:
            sched.step()
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    out = {
        "losses": np.asarray(losses, dtype=np_dtype),
        "params": np.asarray(params, dtype=np_dtype),
    }
    if sched is not None:
        out["lrs"] = np.asarray(lrs, dtype=np.float64)
    return out


def component_cases() -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Layer, activation and loss cases: inputs and torch's outputs and input/parameter gradients."""
    rng = np.random.default_rng(7)
    arrays: dict[str, np.ndarray] = {}
    cases: list[dict[str, Any]] = []

    def t(a: np.ndarray, dtype: torch.dtype = torch.float64, grad: bool = False) -> torch.Tensor:
        return torch.tensor(a, dtype=dtype, requires_grad=grad)

    # Layers / activations: y = f(x); backward of sum(g * y).
    for dtype_name in ("float64", "float32"):
        dtype = DTYPES[dtype_name]
        for bias in (True, False):
            case = f"linear_{'bias' if bias else 'nobias'}_{dtype_name}"
            x_np, w_np, b_np = (
                rng.normal(size=(6, 4)),
                rng.uniform(-0.5, 0.5, (3, 4)),
                rng.uniform(-0.5, 0.5, 3),
            )
            g_np = rng.normal(size=(6, 3))
            layer = nn.Linear(4, 3, bias=bias).to(dtype)
            with torch.no_grad():
                layer.weight.copy_(t(w_np, dtype))
                if bias:
                    layer.bias.copy_(t(b_np, dtype))
            x = t(x_np, dtype, grad=True)
            out = layer(x)
            out.backward(t(g_np, dtype))
            arrays.update(
                {
                    f"{case}/x": x_np.astype(x.numpy(force=True).dtype),
                    f"{case}/weight": layer.weight.detach().numpy().copy(),
                    f"{case}/g": g_np.astype(x.numpy(force=True).dtype),
                    f"{case}/out": out.detach().numpy(),
                    f"{case}/dx": x.grad.numpy(),
                    f"{case}/dweight": layer.weight.grad.numpy(),
                }
            )
            if bias:
                arrays[f"{case}/bias"] = layer.bias.detach().numpy().copy()
                arrays[f"{case}/dbias"] = layer.bias.grad.numpy()
            cases.append(
                {
                    "case": case,
                    "kind": "layer",
                    "name": "linear",
                    "kwargs": {"bias": bias},
                    "out_features": 3,
                    "dtype": dtype_name,
                }
            )
    activations = {
        "tanh": (nn.Tanh(), "tanh", {}),
        "sigmoid": (nn.Sigmoid(), "sigmoid", {}),
        "relu": (nn.ReLU(), "relu", {}),
        "leaky_relu": (nn.LeakyReLU(), "leaky_relu", {}),
        "leaky_relu_0.2": (nn.LeakyReLU(0.2), "leaky_relu", {"negative_slope": 0.2}),
        "softmax": (nn.Softmax(dim=-1), "softmax", {}),
        "identity": (nn.Identity(), "identity", {}),
    }
    for case, (module, name, kwargs) in activations.items():
        x_np = rng.normal(scale=3.0, size=(6, 4))
        x_np[0, :2] = (40.0, -40.0)  # saturated sigmoid/tanh
        g_np = rng.normal(size=(6, 4))
        x = t(x_np, grad=True)
        out = module(x)
        out.backward(t(g_np))
        arrays.update(
            {
                f"{case}/x": x_np,
                f"{case}/g": g_np,
                f"{case}/out": out.detach().numpy(),
                f"{case}/dx": x.grad.numpy(),
            }
        )
        cases.append({"case": case, "kind": "activation", "name": name, "kwargs": kwargs, "dtype": "float64"})

    # Losses: value and d(value)/d(input).
    def loss_case(
        case: str,
        name: str,
        kwargs: dict[str, Any],
        fn: Any,
        x_np: np.ndarray,
        y_np: np.ndarray,
        torch_target: torch.Tensor | None = None,
    ) -> None:
        x = t(x_np, grad=True)
        target = torch_target if torch_target is not None else t(y_np)
        value = fn(x, target)
        value.backward()
        arrays.update(
            {
                f"{case}/x": x_np,
                f"{case}/target": y_np,
                f"{case}/value": value.detach().numpy(),
                f"{case}/dx": x.grad.numpy(),
            }
        )
        cases.append({"case": case, "kind": "loss", "name": name, "kwargs": kwargs, "dtype": "float64"})

    def bce_inputs() -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(scale=2.0, size=(6, 3))
        x[0] = (1000.0, -1000.0, 1000.0)
        x[1] = (-1000.0, 1000.0, -1000.0)
        y = rng.integers(0, 2, size=(6, 3)).astype(np.float64)
        y[0], y[1] = (0.0, 1.0, 1.0), (1.0, 0.0, 0.0)
        y[5] = rng.uniform(0, 1, 3)  # soft targets are allowed
        return x, y

    pos_weight, weight = [0.5, 2.0, 3.0], [1.0, 0.25, 2.0]
    bce_variants: dict[str, dict[str, Any]] = {
        "bce": {},
        "bce_sum": {"reduction": "sum"},
        "bce_pos_weight": {"pos_weight": pos_weight},
        "bce_weight": {"weight": weight},
        "bce_pos_weight_weight": {"pos_weight": pos_weight, "weight": weight},
        "bce_pos_weight_weight_sum": {"pos_weight": pos_weight, "weight": weight, "reduction": "sum"},
    }
    for case, kw in bce_variants.items():
        x_np, y_np = bce_inputs()
        torch_kw = {
            k: (torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v) for k, v in kw.items()
        }
        loss_case(case, "bce_with_logits", kw, nn.BCEWithLogitsLoss(**torch_kw), x_np, y_np)
    # Extreme logits only: every loss term is exactly 0 or 1000.
    x_np = np.array([[1000.0, -1000.0], [1000.0, -1000.0]])
    y_np = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss_case(
        "bce_extreme",
        "bce_with_logits",
        {"reduction": "sum"},
        nn.BCEWithLogitsLoss(reduction="sum"),
        x_np,
        y_np,
    )

    classes = 4
    ce_weight = [1.0, 2.0, 0.5, 1.5]
    ce_variants: dict[str, dict[str, Any]] = {
        "ce": {},
        "ce_smooth": {"label_smoothing": 0.1},
        "ce_weight": {"weight": ce_weight},
        "ce_weight_smooth": {"weight": ce_weight, "label_smoothing": 0.1},
        "ce_ignore": {"ignore": True},
        "ce_ignore_smooth": {"ignore": True, "label_smoothing": 0.1},
        "ce_weight_smooth_ignore": {"ignore": True, "weight": ce_weight, "label_smoothing": 0.1},
        "ce_weight_smooth_ignore_sum": {
            "ignore": True,
            "weight": ce_weight,
            "label_smoothing": 0.1,
            "reduction": "sum",
        },
        "ce_all_ignored": {"all_ignored": True},
        "ce_prob": {"prob": True},
        "ce_prob_smooth_weight": {"prob": True, "weight": ce_weight, "label_smoothing": 0.1},
        "ce_prob_sum": {"prob": True, "reduction": "sum"},
    }
    for case, spec in ce_variants.items():
        spec = dict(spec)
        prob, ignore, all_ignored = (
            spec.pop("prob", False),
            spec.pop("ignore", False),
            spec.pop("all_ignored", False),
        )
        x_np = rng.normal(scale=2.0, size=(7, classes))
        x_np[0] = (30.0, -30.0, 0.0, 5.0)  # a confident row
        torch_kw = {
            k: (torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v) for k, v in spec.items()
        }
        if prob:
            y_np = rng.dirichlet(np.ones(classes), size=7)
            target = torch.tensor(y_np)
        else:
            y_np = rng.integers(0, classes, size=7)
            if ignore:
                y_np[3] = -100
            if all_ignored:
                y_np[:] = -100
            target = torch.tensor(y_np, dtype=torch.int64)
        loss_case(
            case, "cross_entropy", spec, nn.CrossEntropyLoss(**torch_kw), x_np, y_np, torch_target=target
        )

    for case, kw in {"mse": {}, "mse_sum": {"reduction": "sum"}}.items():
        x_np, y_np = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
        loss_case(case, "mse", kw, nn.MSELoss(**kw), x_np, y_np)
    return arrays, cases


def scheduler_lrs() -> dict[str, Any]:
    """torch's per-epoch learning rates (recursive forms), read before each ``scheduler.step()``."""
    out: dict[str, Any] = {}
    specs = {
        "step_3_0.1": ({"name": "step", "kwargs": {"step_size": 3, "gamma": 0.1}}, 20),
        "step_100_0.5": ({"name": "step", "kwargs": {"step_size": 100, "gamma": 0.5}}, 400),
        "cosine_10": ({"name": "cosine", "kwargs": {"t_max": 10}}, 45),
        "cosine_7_min": ({"name": "cosine", "kwargs": {"t_max": 7, "eta_min": 1e-4}}, 50),
        "cosine_150": ({"name": "cosine", "kwargs": {"t_max": 150}}, 400),
    }
    for key, (spec, epochs) in specs.items():
        base_lr = 0.01
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
        sched = torch_scheduler(spec, opt)
        lrs = []
        for _ in range(epochs):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out[key] = {"scheduler": spec, "base_lr": base_lr, "lrs": lrs}
    return out


def shaped_cases() -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The shaped layers and BCELoss in float64: outputs and gradients for given inputs and parameters."""
    rng = np.random.default_rng(12)
    arrays: dict[str, np.ndarray] = {}
    cases: list[dict[str, Any]] = []
    f64 = torch.float64

    def record(case: str, name: str, kwargs: dict[str, Any], module: nn.Module, x_np: np.ndarray,
               train: bool = True, extra: dict[str, np.ndarray] | None = None) -> None:
        module = module.to(f64)
        module.train(train)
        module.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.from_numpy(rng.uniform(-0.8, 0.8, tuple(p.shape))))
        before = {k: v.detach().clone().numpy() for k, v in module.named_buffers() if v.dtype == f64}
        x = torch.tensor(x_np, dtype=f64, requires_grad=True)
        out = module(x)
        g_np = rng.normal(size=tuple(out.shape))
        out.backward(torch.from_numpy(g_np))
        arrays.update({f"{case}/x": x_np, f"{case}/g": g_np, f"{case}/out": out.detach().numpy(),
                       f"{case}/dx": x.grad.numpy()})
        for k, p in module.named_parameters():
            arrays[f"{case}/{k}"] = p.detach().numpy().copy()
            arrays[f"{case}/d{k}"] = p.grad.numpy()
        for k, v in before.items():
            arrays[f"{case}/{k}"] = v
            arrays[f"{case}/new_{k}"] = dict(module.named_buffers())[k].detach().numpy().copy()
        arrays.update({f"{case}/{k}": v for k, v in (extra or {}).items()})
        cases.append({"case": case, "name": name, "kwargs": kwargs, "train": train, "dtype": "float64"})

    conv = {
        "conv2d": ({"out_channels": 4, "kernel_size": 3}, (2, 3, 6, 7)),
        "conv2d_pad1": ({"out_channels": 4, "kernel_size": 3, "padding": 1}, (2, 3, 5, 5)),
        "conv2d_stride2_pad2": ({"out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 2}, (2, 2, 7, 6)),
        "conv2d_rect_nobias": ({"out_channels": 2, "kernel_size": (2, 3), "stride": (2, 1), "bias": False},
                               (3, 2, 5, 6)),
    }
    for case, (kw, shape) in conv.items():
        torch_kw = {k: v for k, v in kw.items() if k != "out_channels"}
        record(case, "conv2d", {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
               nn.Conv2d(shape[1], kw["out_channels"], **torch_kw), rng.normal(size=shape))
    pools = {
        "max_pool2d": ("max_pool2d", nn.MaxPool2d(2), {"kernel_size": 2}, (2, 3, 6, 6)),
        "max_pool2d_odd": ("max_pool2d", nn.MaxPool2d(2), {"kernel_size": 2}, (2, 2, 5, 7)),
        "max_pool2d_3_2_1": ("max_pool2d", nn.MaxPool2d(3, 2, 1), {"kernel_size": 3, "stride": 2, "padding": 1},
                             (2, 2, 7, 6)),
        "avg_pool2d": ("avg_pool2d", nn.AvgPool2d(2), {"kernel_size": 2}, (2, 3, 6, 6)),
        "avg_pool2d_3_2_1": ("avg_pool2d", nn.AvgPool2d(3, 2, 1), {"kernel_size": 3, "stride": 2, "padding": 1},
                             (2, 2, 7, 6)),
        "flatten": ("flatten", nn.Flatten(), {}, (3, 2, 3, 4)),
        "glu": ("glu", nn.GLU(), {}, (4, 6)),
        "glu_image": ("glu", nn.GLU(), {}, (2, 3, 2, 4)),
    }
    for case, (name, module, kw, shape) in pools.items():
        record(case, name, kw, module, rng.normal(size=shape))
    for case, (module, shape) in {"batch_norm_1d": (nn.BatchNorm1d(3), (6, 3)),
                                  "batch_norm_1d_length": (nn.BatchNorm1d(3), (4, 3, 5)),
                                  "batch_norm_2d": (nn.BatchNorm2d(3), (4, 3, 3, 5))}.items():
        for train in (True, False):
            with torch.no_grad():  # non-trivial running statistics going in
                module.running_mean.copy_(torch.from_numpy(rng.normal(size=3)))
                module.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, 3)))
            record(f"{case}_{'train' if train else 'eval'}", "batch_norm", {}, module,
                   rng.normal(1.0, 2.0, size=shape), train=train)
    module = nn.BatchNorm2d(2, eps=1e-3, momentum=0.3)
    record("batch_norm_2d_eps_momentum_train", "batch_norm", {"eps": 1e-3, "momentum": 0.3}, module,
           rng.normal(size=(3, 2, 4, 4)))
    for case, p, shape in (("dropout", 0.3, (5, 8)), ("dropout_image", 0.5, (3, 2, 4, 4))):
        torch.manual_seed(3)
        x_np = rng.normal(size=shape)
        with torch.no_grad():
            mask = (nn.functional.dropout(torch.ones(shape, dtype=f64), p) != 0).to(f64).numpy()
        torch.manual_seed(3)  # the same draw again, now on x
        record(case, "dropout", {"p": p}, nn.Dropout(p), x_np, extra={"mask": mask})

    def loss_case(case: str, kwargs: dict[str, Any], x_np: np.ndarray, y_np: np.ndarray) -> None:
        x = torch.tensor(x_np, requires_grad=True)
        torch_kw = {k: torch.tensor(v, dtype=f64) if isinstance(v, list) else v for k, v in kwargs.items()}
        value = nn.BCELoss(**torch_kw)(x, torch.tensor(y_np))
        value.backward()
        arrays.update({f"{case}/x": x_np, f"{case}/target": y_np, f"{case}/value": value.detach().numpy(),
                       f"{case}/dx": x.grad.numpy()})
        cases.append({"case": case, "name": "bce", "kwargs": kwargs, "loss": True, "dtype": "float64"})

    probs = rng.uniform(0.02, 0.98, (6, 3))
    probs[0] = (0.0, 1.0, 1e-9)  # the clamped logs and the clamped gradient denominator
    targets = rng.integers(0, 2, (6, 3)).astype(np.float64)
    targets[0] = (0.0, 1.0, 0.0)
    targets[5] = rng.uniform(0, 1, 3)
    loss_case("bce_probs", {}, probs, targets)
    loss_case("bce_probs_weight_sum", {"weight": [1.0, 0.25, 2.0], "reduction": "sum"}, probs, targets)
    return arrays, cases


CNN_POINTS, CNN_BATCH, CNN_EPOCHS = 320, 64, 100
CNN_CHECKPOINTS = (1, 50, 250, 500)


def make_cnn() -> nn.Sequential:
    """The reference digits CNN."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))


def cnn_run() -> dict[str, np.ndarray]:
    """500 AdamW steps of the reference CNN on the first 320 digits training images, float64."""
    from expsvc.builtins.datasets import Digits

    data = Digits().load()
    x = torch.from_numpy(data.x_train[:CNN_POINTS])
    y = torch.from_numpy(data.y_train[:CNN_POINTS])
    torch.manual_seed(0)
    net = make_cnn().to(torch.float64)
    init = flat_params(net)
    perm_rng = np.random.default_rng(64)
    perms = np.stack([perm_rng.permutation(CNN_POINTS) for _ in range(CNN_EPOCHS)]).astype(np.int16)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, foreach=False)
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    params: list[np.ndarray] = []
    for epoch in range(CNN_EPOCHS):
        train_epoch(net, opt, loss_fn, x, y, perms[epoch], CNN_BATCH, CNN_CHECKPOINTS, losses, params)
    print(f"cnn: loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} steps")
    return {"init": init, "perms": perms, "losses": np.asarray(losses), "params": np.asarray(params),
            "checkpoint_steps": np.asarray(CNN_CHECKPOINTS)}


def main() -> None:
    """Generate every fixture into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT, help="output directory")
    parser.add_argument("--only", choices=("all", "shaped"), default="all",
                        help="'shaped': only the shaped-layer and CNN fixtures (the manifest is updated in place)")
    args = parser.parse_args()
    if torch.__version__.split("+")[0] != EXPECTED_TORCH:
        raise SystemExit(
            f"need torch {EXPECTED_TORCH} (pip install torch=={EXPECTED_TORCH}), got {torch.__version__}"
        )
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    shaped_arrays, shaped = shaped_cases()
    write_npz(out / "shaped.npz", shaped_arrays)
    write_npz(out / "cnn_digits.npz", cnn_run())
    cnn_manifest = {"layers": ["conv2d(8, 3, padding=1)", "relu", "max_pool2d(2)", "conv2d(16, 3, padding=1)",
                               "relu", "max_pool2d(2)", "flatten", "linear(10)"],
                    "loss": "cross_entropy", "optimizer": {"name": "adamw", "kwargs": {"lr": 1e-3}},
                    "points": CNN_POINTS, "batch_size": CNN_BATCH, "epochs": CNN_EPOCHS,
                    "checkpoint_steps": list(CNN_CHECKPOINTS)}
    if args.only == "shaped":
        manifest = json.loads((out / "manifest.json").read_text())
        manifest.update({"shaped": shaped, "cnn": cnn_manifest})
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        return

    x, y = make_dataset()
    torch.manual_seed(0)
    init = flat_params(make_net().to(torch.float64))
    perm_rng = np.random.default_rng(53)
    perms = np.stack([perm_rng.permutation(N_POINTS) for _ in range(EPOCHS)]).astype(np.int16)
    net_arrays: dict[str, np.ndarray] = {
        "x": x,
        "y": y,
        "init": init,
        "perms": perms,
        "checkpoint_steps": np.asarray(CHECKPOINT_STEPS),
    }
    for dtype_name, dtype in DTYPES.items():
        for run, spec in RUNS.items():
            for key, value in train_run(spec, dtype, x, y, init, perms).items():
                net_arrays[f"{dtype_name}/{run}/{key}"] = value
            print(f"{dtype_name} {run}: final loss {net_arrays[f'{dtype_name}/{run}/losses'][-1]:.6f}")
    write_npz(out / "net_2531.npz", net_arrays)

    comp_arrays, cases = component_cases()
    write_npz(out / "components.npz", comp_arrays)
    (out / "schedulers.json").write_text(json.dumps(scheduler_lrs(), indent=1) + "\n")
    manifest = {
        "generator": "scripts/make_torch_fixtures.py",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "net": {
            "layers": ["linear(5)", "tanh", "linear(3)", "tanh", "linear(1)"],
            "loss": "bce_with_logits",
            "batch_size": BATCH,
            "epochs": EPOCHS,
            "steps": EPOCHS * -(-N_POINTS // BATCH),
            "checkpoint_steps": list(CHECKPOINT_STEPS),
            "dtypes": list(DTYPES),
            "runs": RUNS,
        },
        "components": cases,
        "shaped": shaped,
        "cnn": cnn_manifest,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {len(list(out.iterdir()))} files, {total / 1024:.0f} KiB, to {out}")


if __name__ == "__main__":
    main()
