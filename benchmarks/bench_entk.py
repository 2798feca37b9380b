"""eNTK benchmark: every ``ntkmonitor`` method against the torch.func tutorial recipe and neural-tangents.

One command times every contender on the same weights and inputs and prints a Markdown table per
workload (median of ``--repeats`` >= 3 timed runs after one untimed warm-up, min-max, peak memory,
speedups, error against a float64 reference) plus machine information; ``--json OUT`` saves it all.

    python benchmarks/bench_entk.py                                  # CPU: mlp, resnet, mobilenet, transformer
    python benchmarks/bench_entk.py --nt-python /work/nt-venv/bin/python --json entk.json
    python benchmarks/bench_entk.py --workloads mlp --modes trace --contenders ntkmonitor:auto,recipe
    python benchmarks/bench_entk.py --device cuda --workloads mlp,resnet18 --modes trace --n 1024
    python benchmarks/bench_entk.py --quick                          # tiny sizes (the smoke test)

**Workloads** (torch, fixed seeds; ``--n`` overrides the number of examples; ``K(x, x)``):

- ``ddp`` (not in the default set): ``benchmarks/bench_distributed.py``, the kernel shared by 2 processes x 1
  thread (gloo, ``distributed=True``) against 1 process x 1 thread, on the MLP (``jacobian``) and the small
  ResNet (``auto``), n=256 (``--n``).

- ``mlp``: 784-512-512-10, ReLU, n=256; modes ``trace`` and ``full``.
- ``resnet``: a small ResNet on 3x32x32: 3x3 conv stem (16 ch) + 3 basic blocks (16, 32/2, 64/2 ch;
  BatchNorm in eval mode with random running statistics, 1x1-conv shortcuts) + global mean pool +
  linear 10; n=128; ``trace``.
- ``transformer``: token ids (vocab 256, length 32) -> embedding + learned positions -> 2
  ``nn.TransformerEncoderLayer`` (d_model 64, 4 heads, feed-forward 128, ReLU, post-norm) -> mean pool
  -> linear 10; n=64; ``trace``.
- ``mobilenet``: a MobileNetV2-style CNN on 3x32x32: 3x3 conv stem (16 ch) + 5 inverted residual blocks
  (channels 16, 24/2, 24, 32/2, 32; expansion 4: 1x1 conv, **depthwise** 3x3 conv, 1x1 conv, each with
  BatchNorm in eval mode, ReLU6) + global mean pool + linear 10; n=128; ``trace``.
- ``resnet18``: torchvision-style ResNet-18 adapted to 3x32x32 (3x3 stride-1 stem, no max-pool,
  basic blocks [2, 2, 2, 2] x (64, 128, 256, 512), global mean pool, linear 10), n=128 (use
  ``--n 1024`` for the GPU target); written here, no torchvision. Only in the default set with
  ``--device cuda``.

**Contenders** (``--contenders``, comma-separated, default all):

- ``ntkmonitor:jacobian``, ``ntkmonitor:ntk_vp``, ``ntkmonitor:structured``, ``ntkmonitor:auto``:
  ``ntkmonitor.empirical_ntk(model, x, mode=..., method=...)`` (``auto``'s choice is reported).
- ``recipe``: the PyTorch tutorial "Neural Tangent Kernels" (torch.func) recipe as written there:
  ``fnet_single`` via ``functional_call`` on one unsqueezed example, ``jac = vmap(jacrev(fnet_single),
  (None, 0))(params, x)`` for ``x1`` and again for ``x2`` (here both are ``x``), each Jacobian flattened
  per parameter, ``torch.einsum`` per parameter with the tutorial's strings (``'Naf,Mbf->NMab'`` for
  full, ``'Naf,Maf->NM'`` for trace), stacked and summed over parameters. The tutorial's trace sums over
  the ``k`` outputs; here it is divided by ``k`` to match ``ntkmonitor``'s (and neural-tangents')
  ``trace`` = mean over outputs.
- ``neural-tangents:AUTO``, ``:JACOBIAN_CONTRACTION``, ``:NTK_VECTOR_PRODUCTS``, ``:STRUCTURED_DERIVATIVES``
  (``neural-tangents``, or ``nt``, selects all four): ``nt.empirical_ntk_fn(apply_fn,
  trace_axes=(-1,) | (), vmap_axes=0, implementation=...)``, jitted, compile time excluded (reported
  separately), float32, on the same weights and inputs (exported to ``.npz``) through a jax.numpy
  mirror of the torch module; run by ``benchmarks/_nt_worker.py`` in a separate environment given by
  ``--nt-python`` (default: env ``NTKMONITOR_NT_PYTHON``; without it the NT rows are skipped with the
  reason printed). The NT environment (Python 3.11 has wheels for these pins)::

      python3 -m venv /work/nt-venv && /work/nt-venv/bin/pip install neural-tangents==0.6.5 \\
          jax==0.4.23 jaxlib==0.4.23 "numpy<2" "ml_dtypes<0.5" "tensorflow<2.16" tf2jax==0.3.6

**Timing**: one untimed warm-up call, then the median (and min-max) of ``--repeats`` timed calls
(``torch.cuda.synchronize()`` around each on CUDA, ``block_until_ready`` for JAX).

**Peak memory**: each torch contender first runs once on 2 examples (one-time initialization:
lazy imports, torch.func set-up; not measured). On CUDA, the peak is ``torch.cuda.max_memory_allocated()``
minus the allocation before the warm-up call (after ``reset_peak_memory_stats``). On CPU, with
``--isolate subprocess`` (the default) each contender runs in a fresh Python process
(``sys.executable``; a forked child would deadlock in OpenMP) that loads the model and inputs, does
the initialization, resets its peak-RSS watermark (``/proc/self/clear_refs``) and reports ``VmHWM``
after the runs minus ``VmRSS`` before them, i.e. the peak resident-memory increase of warm-up + timed
runs. The NT worker does the same after compiling.
``--isolate none`` runs in this process (fast; the allocator may reuse memory freed by an earlier
contender, so CPU peaks are lower bounds). A contender that raises, is killed (out of memory) or
exceeds ``--timeout`` gets its error recorded and the benchmark goes on.

**Threads**: ``--threads N`` sets torch's intra-op threads (``N = 1`` also turns off XLA's
multi-threaded Eigen in the NT worker). On a machine shared with other jobs, OpenMP's spinning
barriers make multi-threaded torch calls of small operations very slow (seen here: the ``--quick``
sizes take ~0.3-3 s per call with 2 threads under a load of 5 on 2 cores, ~0.01 s with 1 thread), so
report multi-threaded numbers from an idle machine only and record the load average (printed).

**Correctness**: the reference is ``ntkmonitor.empirical_ntk(..., dtype=torch.float64)`` with
``--reference-method`` (default ``auto``: the cheapest; ``jacobian`` for a reference independent of
the structured code, at the price of minutes for the MLP's full kernel). Every contender's kernel is
compared by relative Frobenius error ``||K - K_ref|| / ||K_ref||``. The recipe and neural-tangents
are independent implementations, so their errors also validate the reference.

**Ratios**: ``vs recipe`` = recipe median / contender median, ``vs NT best`` = fastest NT
implementation's median / contender median (> 1: the contender is faster).

**FLOP/s** (``--count-flops``, default on for CUDA): one extra untimed call under
``torch.utils.flop_counter.FlopCounterMode`` counts the contender's matmul/conv FLOPs; achieved FLOP/s
= FLOPs / median time, reported as a fraction of a measured dense-matmul peak and, for known GPUs, of
the datasheet peak (``--peak-tflops`` overrides it).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _peak_rss import proc_status_kib, reset_peak_rss
from torch import nn
from torch.func import functional_call, jacrev, vmap

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_nt_worker.py"

TORCH_CONTENDERS = ["ntkmonitor:jacobian", "ntkmonitor:ntk_vp", "ntkmonitor:structured", "ntkmonitor:auto", "recipe"]
NT_IMPLEMENTATIONS = ["AUTO", "JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES"]
NT_CONTENDERS = [f"neural-tangents:{impl}" for impl in NT_IMPLEMENTATIONS]
DEFAULT_WORKLOADS = {
    "cpu": ["mlp", "resnet", "mobilenet", "transformer"],
    "cuda": ["mlp", "resnet", "mobilenet", "transformer", "resnet18"],
}

# Vendor datasheet peaks (dense, boost clock), TFLOP/s: (fp32, tf32 tensor core, fp64 tensor core).
GPU_PEAK_TFLOPS = {
    "H200": (66.9, 494.7, 66.9),
    "H100 PCIe": (51.2, 378.0, 51.2),
    "H100": (66.9, 494.7, 66.9),  # SXM ("NVIDIA H100 80GB HBM3")
    "A100": (19.5, 156.0, 19.5),
}


# ---------------------------------------------------------------------------------------------------
# Workloads: the torch modules (the jax.numpy mirrors are in _nt_worker.py; keep the names in sync)
# ---------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3x3 convs with BatchNorm, identity or 1x1-conv shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stride-1 conv stem + BatchNorm + ReLU, basic blocks ``[(channels, stride), ...]``, mean pool, linear."""

    def __init__(self, in_ch: int, stem: int, blocks: list, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, cin = [], stem
        for cout, stride in blocks:
            layers.append(BasicBlock(cin, cout, stride))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu(self.bn1(self.conv1(x)))
        return self.fc(self.layers(out).mean((2, 3)))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, depthwise 3x3 (``groups`` = channels), 1x1 projection; BatchNorm and
    ReLU6; a residual connection when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h = F.relu6(self.bn1(self.expand(x)))
        h = F.relu6(self.bn2(self.depthwise(h)))
        h = self.bn3(self.project(h))
        return x + h if self.residual else h


class MobileNet(nn.Module):
    """3x3 conv stem + BatchNorm + ReLU6, inverted residual blocks ``[(channels, stride, expansion), ...]``, mean
    pool, linear."""

    def __init__(self, in_ch: int, stem: int, blocks: list, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, cin = [], stem
        for cout, stride, expand in blocks:
            layers.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu6(self.bn1(self.conv1(x)))
        return self.fc(self.layers(out).mean((2, 3)))


class TokenTransformer(nn.Module):
    """Embedding + learned positions -> ``nn.TransformerEncoderLayer`` x layers -> mean pool -> linear."""

    def __init__(self, vocab: int, seq: int, d: int, heads: int, ff: int, layers: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(seq, d))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True) for _ in range(layers)
        )
        self.head = nn.Linear(d, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h = self.embed(ids) + self.pos[: ids.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


_RESNET18_BLOCKS = [[64, 1], [64, 1], [128, 2], [128, 1], [256, 2], [256, 1], [512, 2], [512, 1]]

WORKLOADS = {
    # name: (config, n, modes, quick config, quick n)
    "mlp": ({"arch": "mlp", "dims": [784, 512, 512, 10]}, 256, ["trace", "full"], {"dims": [20, 32, 32, 3]}, 8),
    "resnet": (
        {"arch": "resnet", "in_ch": 3, "hw": 32, "stem": 16, "blocks": [[16, 1], [32, 2], [64, 2]], "classes": 10},
        128,
        ["trace"],
        {"hw": 8, "stem": 4, "blocks": [[4, 1], [8, 2]], "classes": 3},
        4,
    ),
    "transformer": (
        {"arch": "transformer", "vocab": 256, "seq": 32, "d": 64, "heads": 4, "ff": 128, "layers": 2, "classes": 10},
        64,
        ["trace"],
        {"vocab": 20, "seq": 6, "d": 16, "heads": 2, "ff": 32, "layers": 1, "classes": 3},
        4,
    ),
    "mobilenet": (
        {
            "arch": "mobilenet",
            "in_ch": 3,
            "hw": 32,
            "stem": 16,
            "blocks": [[16, 1, 4], [24, 2, 4], [24, 1, 4], [32, 2, 4], [32, 1, 4]],
            "classes": 10,
        },
        128,
        ["trace"],
        {"hw": 8, "stem": 4, "blocks": [[4, 1, 2], [8, 2, 2]], "classes": 3},
        4,
    ),
    "resnet18": (
        {"arch": "resnet", "in_ch": 3, "hw": 32, "stem": 64, "blocks": _RESNET18_BLOCKS, "classes": 10},
        128,
        ["trace"],
        {"hw": 8, "stem": 8, "blocks": [[8, 1], [8, 1], [16, 2], [16, 1]], "classes": 3},
        4,
    ),
}


def build_model(config: dict, seed: int = 0) -> nn.Module:
    """The eval-mode torch module of a workload ``config`` with fixed-seed weights (float32, CPU).

    Args:
        config: a ``WORKLOADS`` configuration (``arch`` and its sizes).
        seed: the weights' seed.

    Returns:
        The module in eval mode. BatchNorm layers get random affine parameters and running statistics.
    """
    torch.manual_seed(seed)
    arch = config["arch"]
    if arch == "mlp":
        dims = config["dims"]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers += [nn.Linear(dims[i], dims[i + 1]), nn.ReLU()]
        model = nn.Sequential(*layers[:-1])
    elif arch in ("resnet", "mobilenet"):
        net = ResNet if arch == "resnet" else MobileNet
        model = net(config["in_ch"], config["stem"], config["blocks"], config["classes"])
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    c = module.num_features
                    module.weight.copy_(1 + 0.1 * torch.randn(c, generator=gen))
                    module.bias.copy_(0.1 * torch.randn(c, generator=gen))
                    module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                    module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
    elif arch == "transformer":
        keys = ("vocab", "seq", "d", "heads", "ff", "layers", "classes")
        model = TokenTransformer(*(config[key] for key in keys))
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    return model.eval()


def make_inputs(config: dict, n: int, seed: int = 1) -> torch.Tensor:
    """Fixed-seed inputs of a workload: ``(n, 784)``, ``(n, 3, hw, hw)`` floats or ``(n, seq)`` token ids.

    Args:
        config: a ``WORKLOADS`` configuration.
        n: number of examples.
        seed: the inputs' seed.

    Returns:
        A CPU tensor (float32 or int64).
    """
    gen = torch.Generator().manual_seed(seed)
    arch = config["arch"]
    if arch == "mlp":
        return torch.randn(n, config["dims"][0], generator=gen)
    if arch in ("resnet", "mobilenet"):
        return torch.randn(n, config["in_ch"], config["hw"], config["hw"], generator=gen)
    return torch.randint(0, config["vocab"], (n, config["seq"]), generator=gen)


def workload_config(name: str, quick: bool) -> tuple[dict, int, list[str]]:
    """``(config, default n, modes)`` of the workload ``name``, tiny when ``quick``."""
    config, n, modes, quick_config, quick_n = WORKLOADS[name]
    if quick:
        return {**config, **quick_config}, quick_n, modes
    return dict(config), n, modes


# ---------------------------------------------------------------------------------------------------
# The torch contenders
# ---------------------------------------------------------------------------------------------------


def tutorial_recipe(model: nn.Module, mode: str):
    """The torch.func tutorial's ``empirical_ntk_jacobian_contraction``, as written there.

    Args:
        model: the (eval-mode) module.
        mode: ``"trace"`` (divided by ``k`` to give the mean over outputs) or ``"full"``.

    Returns:
        ``fn(x1, x2)`` computing the kernel.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(params, x):
        return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)

    def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, compute):
        # Compute J(x1)
        jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
        jac1 = jac1.values()
        jac1 = [j.flatten(2) for j in jac1]

        # Compute J(x2)
        jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = jac2.values()
        jac2 = [j.flatten(2) for j in jac2]

        # Compute J(x1) @ J(x2).T
        einsum_expr = {"full": "Naf,Mbf->NMab", "trace": "Naf,Maf->NM", "diagonal": "Naf,Maf->NMa"}[compute]
        result = torch.stack([torch.einsum(einsum_expr, j1, j2) for j1, j2 in zip(jac1, jac2)])  # noqa: B905
        result = result.sum(0)
        return result

    def fn(x1, x2):
        result = empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, mode)
        if mode == "trace":  # the tutorial sums over outputs; ntkmonitor and neural-tangents average
            k = fnet_single(params, x1[0]).numel()
            result = result / k
        return result

    return fn


def _contender_fn(contender: str, model: nn.Module, x: torch.Tensor, mode: str, dtype: torch.dtype):
    import ntkmonitor

    if contender == "recipe":
        recipe = tutorial_recipe(model, mode)
        return lambda: recipe(x, x)
    if contender.startswith("ntkmonitor:"):
        method = contender.split(":", 1)[1]
        return lambda: ntkmonitor.empirical_ntk(model, x, mode=mode, method=method, dtype=dtype)
    raise ValueError(f"unknown torch contender {contender!r}")


@contextlib.contextmanager
def _record_auto_choice(record: dict):
    """Record which method ``method="auto"`` resolves to (wraps ``ntkmonitor.kernel.resolve_method``)."""
    from ntkmonitor import kernel

    original = kernel.resolve_method

    def wrapped(problem, method="auto"):
        chosen = original(problem, method)
        record["auto_choice"] = chosen.value
        return chosen

    kernel.resolve_method = wrapped
    try:
        yield
    finally:
        kernel.resolve_method = original


def _trim_heap() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(kernel: torch.Tensor, reference: torch.Tensor) -> float:
    """``||K - K_ref||_F / ||K_ref||_F`` in float64 (``inf`` on a shape mismatch)."""
    kernel = torch.as_tensor(kernel).detach().to("cpu", torch.float64)
    reference = reference.detach().to("cpu", torch.float64)
    if kernel.shape != reference.shape:
        return math.inf
    return float(torch.linalg.vector_norm(kernel - reference) / torch.linalg.vector_norm(reference))


def run_torch_contender(
    contender: str,
    model: nn.Module,
    x: torch.Tensor,
    mode: str,
    repeats: int,
    dtype: torch.dtype,
    reference=None,
    count_flops: bool = False,
) -> dict:
    """Warm-up + ``repeats`` timed calls of one torch contender, with its peak memory and error.

    Args:
        contender: ``"recipe"`` or ``"ntkmonitor:<method>"``.
        model: the module, already on its device and in ``dtype``.
        x: the inputs on the same device.
        mode: ``"trace"`` or ``"full"``.
        repeats: number of timed calls.
        dtype: the computation dtype.
        reference: the float64 reference kernel, or a function loading it (called after the memory
            measurement), or ``None`` (no error computed).
        count_flops: count the FLOPs of one extra call with ``FlopCounterMode``.

    Returns:
        ``{"times_s", "median_s", "min_s", "max_s", "warmup_s", "peak_mib", "peak_method", "rel_err", ...}``
        or ``{"error": ...}``.
    """
    device = x.device
    record: dict = {}
    try:
        fn = _contender_fn(contender, model, x, mode, dtype)
        _contender_fn(contender, model, x[:2], mode, dtype)()  # one-time initialization, outside the measurement
        _trim_heap()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            hwm_ok = True
        else:
            base = proc_status_kib("VmRSS")
            hwm_ok = reset_peak_rss()
        _sync(device)
        start = time.perf_counter()
        if contender == "ntkmonitor:auto":
            with _record_auto_choice(record):
                out = fn()
        else:
            out = fn()
        _sync(device)
        record["warmup_s"] = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            out = None
            _sync(device)
            start = time.perf_counter()
            out = fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        if device.type == "cuda":
            record["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            record["peak_method"] = "cuda max_memory_allocated - allocated before"
        else:
            hwm = proc_status_kib("VmHWM")
            ok = hwm_ok and hwm is not None and base is not None
            record["peak_mib"] = max(hwm - base, 0) / 1024 if ok else None
            record["peak_method"] = "VmHWM - VmRSS before warm-up" if ok else "unavailable"
        record.update(
            times_s=times,
            median_s=statistics.median(times),
            min_s=min(times),
            max_s=max(times),
            kernel_shape=list(out.shape),
            dtype=str(out.dtype).replace("torch.", ""),
        )
        if reference is not None:
            record["rel_err"] = rel_err(out, reference() if callable(reference) else reference)
        del out
        if count_flops:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                fn()
            record["flops"] = int(counter.get_total_flops())
    except Exception as exc:  # noqa: BLE001 - recorded, the benchmark goes on
        record = {"error": f"{type(exc).__name__}: {exc}"[:1000], **{k: v for k, v in record.items() if k != "error"}}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return record


def _child_main(spec_path: str) -> None:
    """Run one torch contender in this (fresh) process, as described by the spec written by the parent."""
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        saved = torch.load(spec["workload_file"])
        device = torch.device(spec["device"])
        dtype = getattr(torch, spec["dtype"])
        if device.type == "cuda":
            _set_tf32(spec["tf32"])
        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        model = build_model(spec["config"])
        model.load_state_dict(saved["state_dict"])
        model = model.to(device=device, dtype=dtype)
        x = saved["x"].to(device)
        if x.is_floating_point():
            x = x.to(dtype)
        record = run_torch_contender(
            spec["contender"],
            model,
            x,
            spec["mode"],
            spec["repeats"],
            dtype,
            lambda: torch.load(spec["reference_file"]),  # loaded after the memory measurement
            spec["count_flops"],
        )
    except Exception as exc:  # noqa: BLE001
        record = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    with open(spec["out"], "w") as f:
        json.dump(record, f)


def _run_subprocess(cmd: list[str], out: Path, timeout: float, env: dict | None = None) -> dict:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout: killed after {timeout:.0f} s"}
    if out.exists():
        return json.loads(out.read_text())
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
    reason = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    if proc.returncode == -9:
        reason += " (likely out of memory)"
    return {"error": f"{reason}: {' | '.join(tail)}"[:1000]}


# ---------------------------------------------------------------------------------------------------
# Machine information, FLOP/s peaks
# ---------------------------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict:
    """CPU model, core counts, load, versions, device name."""
    cpu_model = platform.processor() or None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    import ntkmonitor

    info = {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ntkmonitor": getattr(ntkmonitor, "__version__", None),
        "numpy": np.__version__,
        "device": str(device),
        "device_name": cpu_model,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        info["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return info


def _set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Best dense ``n x n`` matmul rate in TFLOP/s (the achievable peak for this device and dtype)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    del a, b
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * n**3 / best / 1e12


def datasheet_tflops(device_name: str, dtype: torch.dtype, tf32: bool) -> float | None:
    """The vendor datasheet peak of a known GPU for ``dtype`` (TF32 tensor cores when ``tf32``)."""
    for key, (fp32, tf32_peak, fp64) in GPU_PEAK_TFLOPS.items():
        if key in device_name:
            if dtype == torch.float64:
                return fp64
            return tf32_peak if tf32 else fp32
    return None


# ---------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------


def _parse_contenders(text: str | None) -> list[str]:
    if not text:
        return TORCH_CONTENDERS + NT_CONTENDERS
    chosen: list[str] = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        if item in ("neural-tangents", "nt"):
            chosen += NT_CONTENDERS
        elif item == "ntkmonitor":
            chosen += TORCH_CONTENDERS[:4]
        elif item.startswith("nt:"):
            chosen.append("neural-tangents:" + item[3:])
        elif item in TORCH_CONTENDERS or item in NT_CONTENDERS:
            chosen.append(item)
        else:
            raise SystemExit(f"unknown contender {item!r}; known: {', '.join(TORCH_CONTENDERS + NT_CONTENDERS)}")
    return list(dict.fromkeys(chosen))


def _nt_python(arg: str | None, device: torch.device) -> tuple[str | None, str | None]:
    """``(python, None)`` or ``(None, reason to skip)``."""
    python = arg or os.environ.get("NTKMONITOR_NT_PYTHON")
    if not python:
        return None, "no --nt-python and NTKMONITOR_NT_PYTHON is not set"
    if not Path(python).exists():
        return None, f"--nt-python {python!r} does not exist"
    probe = subprocess.run(
        [python, "-c", "import jax, neural_tangents; print(jax.default_backend())"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if probe.returncode != 0:
        tail = probe.stderr.strip().splitlines()[-1:] or ["?"]
        return None, f"{python} cannot import jax and neural_tangents: {tail[0]}"
    backend = (probe.stdout.strip().splitlines() or ["?"])[-1]
    if device.type == "cuda" and backend != "gpu":
        return None, f"the jax of {python} has no GPU backend (default backend: {backend}); install a CUDA jaxlib"
    return python, None


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}x" if value < 1000 else f"{value:.0f}x"


def format_table(run: dict) -> str:
    """The Markdown table of one workload/mode."""
    header = (
        f"### {run['workload']} ({run['mode']}), n={run['n']}, k={run['k']}, "
        f"{run['num_params']:,} parameters, {run['dtype']} on {run['device']}\n\n"
    )
    cols = ["contender", "median s", "min-max s", "peak MiB", "vs recipe", "vs NT best", "rel. err", "notes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for name, rec in run["contenders"].items():
        if "error" in rec:
            lines.append(f"| {name} | error | | | | | | {rec['error'][:160].replace('|', '/')} |")
            continue
        notes = []
        if rec.get("auto_choice"):
            notes.append(f"auto -> {rec['auto_choice']}")
        if rec.get("compile_s") is not None:
            notes.append(f"compile {rec['compile_s']:.2g} s")
        if rec.get("device") and not str(rec["device"]).startswith(run["device"].split(":")[0].replace("cuda", "gpu")):
            notes.append(f"ran on {rec['device']}")
        if rec.get("tflops_per_s") is not None:
            text = f"{rec['tflops_per_s']:.3g} TFLOP/s"
            if rec.get("frac_of_matmul_peak"):
                text += f", {100 * rec['frac_of_matmul_peak']:.2g}% of matmul peak"
            if rec.get("frac_of_datasheet_peak"):
                text += f", {100 * rec['frac_of_datasheet_peak']:.2g}% of datasheet peak"
            notes.append(text)
        err = rec.get("rel_err")
        peak = rec.get("peak_mib")
        lines.append(
            f"| {name} | {_fmt_s(rec['median_s'])} | {_fmt_s(rec['min_s'])}-{_fmt_s(rec['max_s'])} | "
            f"{'-' if peak is None else f'{peak:.0f}'} | {_fmt_ratio(rec.get('speedup_vs_recipe'))} | "
            f"{_fmt_ratio(rec.get('speedup_vs_nt_best'))} | {'-' if err is None else f'{err:.1e}'} | "
            f"{'; '.join(n for n in notes if n)} |"
        )
    footer = ""
    if run.get("nt_best"):
        footer = f"\nNT best: {run['nt_best']}. "
    footer += f"Reference: {run['reference']['method']} float64 ({run['reference']['seconds']:.2g} s)."
    return header + "\n".join(lines) + "\n" + footer + "\n"


TARGETS = [
    # (workload, mode, contender, metric, threshold, description)
    ("mlp", "trace", "ntkmonitor:auto", "speedup_vs_nt_best", 100.0, "MLP trace >= 100x faster than NT best"),
    ("mlp", "trace", "ntkmonitor:auto", "speedup_vs_recipe", 200.0, "MLP trace >= 200x faster than the recipe"),
    ("mlp", "trace", "ntkmonitor:auto", "memory_vs_recipe", 10.0, "MLP trace peak memory <= 1/10 of the recipe's"),
    ("mlp", "full", "ntkmonitor:auto", "speedup_vs_nt_best", 10.0, "MLP full >= 10x faster than NT best"),
    ("resnet", "trace", "ntkmonitor:auto", "speedup_vs_nt_best", 2.0, "ResNet >= 2x faster than NT best"),
    ("resnet", "trace", "ntkmonitor:auto", "speedup_vs_recipe", 3.0, "ResNet >= 3x faster than the recipe"),
    ("mobilenet", "trace", "ntkmonitor:auto", "speedup_vs_recipe", 3.0, "Depthwise CNN >= 3x faster than the recipe"),
    ("transformer", "trace", "ntkmonitor:auto", "speedup_vs_nt_best", 2.0, "Transformer >= 2x faster than NT best"),
    ("transformer", "trace", "ntkmonitor:auto", "speedup_vs_recipe", 3.0, "Transformer >= 3x faster than the recipe"),
]


def _check_targets(runs: list[dict], shared: dict | None = None) -> list[dict]:
    checks = []
    if shared and "mlp" in shared:
        value = shared["mlp"]["speedup"]
        checks.append({"target": "DDP split, 2 processes >= 1.7x faster than 1", "value": value, "met": value >= 1.7})
    for workload, mode, contender, metric, threshold, text in TARGETS:
        run = next((r for r in runs if r["workload"] == workload and r["mode"] == mode), None)
        rec = None if run is None else run["contenders"].get(contender)
        if rec is None or "error" in rec:
            continue
        if metric == "memory_vs_recipe":
            recipe = run["contenders"].get("recipe", {})
            if not recipe.get("peak_mib") or rec.get("peak_mib") is None:
                continue
            value = recipe["peak_mib"] / max(rec["peak_mib"], 1e-9)
        else:
            value = rec.get(metric)
        if value is None:
            continue
        checks.append({"target": text, "contender": contender, "value": value, "met": value >= threshold})
    return checks


def run_workload(name: str, args, contenders: list[str], nt_python: str | None, tmp: Path) -> list[dict]:
    """Benchmark every contender on workload ``name`` in each of its modes; return one record per mode."""
    config, n, modes = workload_config(name, args.quick)
    n = args.n or n
    if args.modes:
        modes = [m for m in modes if m in args.modes]
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = build_model(config)
    x = make_inputs(config, n)
    with torch.no_grad():
        k = model(x[:1]).numel()
    num_params = sum(p.numel() for p in model.parameters())

    workload_file = tmp / f"{name}.pt"
    torch.save({"state_dict": model.state_dict(), "x": x}, workload_file)
    param_names = [p for p, _ in model.named_parameters()]
    buffer_names = [b for b, t in model.state_dict().items() if b not in param_names and t.is_floating_point()]
    npz = tmp / f"{name}.npz"
    state = model.state_dict()
    np.savez(
        npz,
        x=x.numpy(),
        **{f"p:{p}": state[p].numpy() for p in param_names},
        **{f"b:{b}": state[b].numpy() for b in buffer_names},
    )

    model_dev = model.to(device=device, dtype=dtype)
    x_dev = x.to(device)
    if x_dev.is_floating_point():
        x_dev = x_dev.to(dtype)

    import ntkmonitor

    records = []
    for mode in modes:
        print(f"[{name}/{mode}] n={n}, k={k}, {num_params:,} parameters", flush=True)
        choice = {"auto_choice": args.reference_method}
        start = time.perf_counter()
        with _record_auto_choice(choice):
            reference = ntkmonitor.empirical_ntk(
                model_dev, x_dev, mode=mode, method=args.reference_method, dtype=torch.float64
            )
        ref_seconds = time.perf_counter() - start
        reference = reference.cpu()
        if device.type == "cuda":
            torch.cuda.empty_cache()  # leave the GPU memory to the contenders' processes
        reference_file = tmp / f"{name}-{mode}-reference.pt"
        torch.save(reference, reference_file)
        run = {
            "workload": name,
            "mode": mode,
            "n": n,
            "k": k,
            "num_params": num_params,
            "config": config,
            "input_shape": list(x.shape),
            "device": str(device),
            "dtype": args.dtype,
            "reference": {"method": choice["auto_choice"], "dtype": "float64", "seconds": ref_seconds},
            "contenders": {},
        }
        for contender in contenders:
            if contender in NT_CONTENDERS:
                if nt_python is None:
                    continue
                rec = _run_nt(contender, name, config, mode, args, nt_python, npz, param_names, buffer_names, tmp)
                if "kernel_file" in rec:
                    rec["rel_err"] = rel_err(torch.from_numpy(np.load(rec.pop("kernel_file"))), reference)
            elif args.isolate == "subprocess":
                rec = _run_child(contender, config, mode, args, workload_file, reference_file, tmp)
            else:
                rec = run_torch_contender(
                    contender, model_dev, x_dev, mode, args.repeats, dtype, reference, args.count_flops
                )
            run["contenders"][contender] = rec
            status = rec.get("error") or f"{rec['median_s']:.4g} s, err {rec.get('rel_err', float('nan')):.1e}"
            print(f"  {contender:<40} {status}", flush=True)
        _add_ratios(run, args)
        records.append(run)
    return records


def _run_child(contender, config, mode, args, workload_file, reference_file, tmp: Path) -> dict:
    stem = f"{contender.replace(':', '-')}-{mode}-{time.monotonic_ns()}"
    spec = {
        "contender": contender,
        "config": config,
        "mode": mode,
        "repeats": args.repeats,
        "device": args.device,
        "dtype": args.dtype,
        "tf32": args.tf32,
        "threads": args.threads,
        "count_flops": args.count_flops,
        "workload_file": str(workload_file),
        "reference_file": str(reference_file),
        "out": str(tmp / f"{stem}.json"),
    }
    spec_path = tmp / f"{stem}-spec.json"
    spec_path.write_text(json.dumps(spec))
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    cmd = [sys.executable, __file__, "--_child", str(spec_path)]
    return _run_subprocess(cmd, Path(spec["out"]), args.timeout, env)


def _run_nt(contender, name, config, mode, args, nt_python, npz, param_names, buffer_names, tmp: Path) -> dict:
    impl = contender.split(":", 1)[1]
    stem = f"nt-{name}-{impl}-{mode}"
    spec = {
        "arch": config["arch"],
        "config": config,
        "mode": mode,
        "implementation": impl,
        "repeats": args.repeats,
        "npz": str(npz),
        "param_names": param_names,
        "buffer_names": buffer_names,
        "kernel_out": str(tmp / f"{stem}-kernel.npy"),
        "out": str(tmp / f"{stem}.json"),
    }
    spec_path = tmp / f"{stem}-spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    if args.threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    rec = _run_subprocess([nt_python, str(WORKER), str(spec_path)], Path(spec["out"]), args.timeout, env)
    if "error" not in rec:
        rec.update(min_s=min(rec["times_s"]), max_s=max(rec["times_s"]), kernel_file=spec["kernel_out"])
    return rec


def _add_ratios(run: dict, args) -> None:
    recs = run["contenders"]
    ok = {name: rec for name, rec in recs.items() if "error" not in rec}
    recipe = ok.get("recipe", {}).get("median_s")
    nt = {name: rec["median_s"] for name, rec in ok.items() if name in NT_CONTENDERS}
    nt_best = min(nt, key=nt.__getitem__) if nt else None
    run["nt_best"] = nt_best
    for rec in ok.values():
        rec["speedup_vs_recipe"] = recipe / rec["median_s"] if recipe else None
        rec["speedup_vs_nt_best"] = nt[nt_best] / rec["median_s"] if nt_best else None
        if rec.get("flops"):
            rec["tflops_per_s"] = rec["flops"] / rec["median_s"] / 1e12
            if args.matmul_peak_tflops:
                rec["frac_of_matmul_peak"] = rec["tflops_per_s"] / args.matmul_peak_tflops
            if args.peak_tflops:
                rec["frac_of_datasheet_peak"] = rec["tflops_per_s"] / args.peak_tflops


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the tables and return the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", help="comma-separated: mlp, resnet, transformer, resnet18 (default by device)")
    parser.add_argument("--modes", help="comma-separated subset of trace, full (default: each workload's modes)")
    parser.add_argument("--n", type=int, help="number of examples (overrides every workload's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (>= 3 for reporting)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--contenders", help="comma-separated (default: all); 'nt' = every neural-tangents one")
    parser.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--nt-python", help="python of the neural-tangents env (default: env NTKMONITOR_NT_PYTHON)")
    parser.add_argument("--isolate", choices=["subprocess", "none"], default="subprocess")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per contender (subprocesses only)")
    parser.add_argument("--reference-method", default="auto", choices=["auto", "jacobian", "ntk_vp", "structured"])
    parser.add_argument("--count-flops", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--peak-tflops", type=float, help="datasheet peak TFLOP/s for the FLOP/s fraction")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls and convs on CUDA (default off)")
    parser.add_argument("--threads", type=int, help="torch (and XLA) CPU threads (default: torch's default)")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        _child_main(args._child)
        return {}
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _benchmark(args)
    finally:
        torch.set_num_threads(threads)


def _benchmark(args) -> dict:

    device = torch.device(args.device)
    if device.type == "cuda":
        _set_tf32(args.tf32)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.repeats < 3:
        print(f"note: --repeats {args.repeats} < 3: fine for a smoke test, not for reported numbers", flush=True)
    workloads = args.workloads.split(",") if args.workloads else DEFAULT_WORKLOADS[device.type]
    ddp = "ddp" in workloads
    workloads = [name for name in workloads if name != "ddp"]
    for name in workloads:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}, ddp")
    args.modes = args.modes.split(",") if args.modes else None
    contenders = _parse_contenders(args.contenders)
    if args.count_flops is None:
        args.count_flops = device.type == "cuda"

    info = machine_info(device)
    nt_python, nt_reason = (None, "not requested")
    if any(c in NT_CONTENDERS for c in contenders):
        nt_python, nt_reason = _nt_python(args.nt_python, device)
        if nt_python is None:
            print(f"neural-tangents skipped: {nt_reason}", flush=True)
    dtype = getattr(torch, args.dtype)
    args.matmul_peak_tflops = measured_matmul_tflops(device, dtype) if args.count_flops else None
    if args.peak_tflops is None and device.type == "cuda":
        args.peak_tflops = datasheet_tflops(info["device_name"], dtype, args.tf32)
    info.update(matmul_peak_tflops=args.matmul_peak_tflops, datasheet_peak_tflops=args.peak_tflops)

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_entk_") as tmp:
        for name in workloads:
            runs += run_workload(name, args, contenders, nt_python, Path(tmp))
    shared = None
    if ddp:  # the kernel shared by 2 processes x 1 thread against 1 x 1 (bench_distributed.py)
        import bench_distributed

        print("[ddp] 2 processes x 1 thread vs 1 x 1 (bench_distributed.py)", flush=True)
        n = args.n or (16 if args.quick else 256)
        names = ["mlp", "resnet"]
        shared = bench_distributed.main(["--n", str(n), "--repeats", str(args.repeats), "--workloads", *names])

    nt_versions = next(
        (
            {key: rec.get(key) for key in ("nt_version", "jax_version", "jaxlib_version", "device", "python")}
            for run in runs
            for name, rec in run["contenders"].items()
            if name in NT_CONTENDERS and "jax_version" in rec
        ),
        None,
    )
    result = {
        "machine": info,
        "args": {k: v for k, v in vars(args).items() if k != "_child"},
        "contenders": contenders,
        "neural_tangents": {
            "python": nt_python,
            "skipped": nt_reason if nt_python is None else None,
            **(nt_versions or {}),
        },
        "runs": runs,
        "ddp": shared,
        "targets": _check_targets(runs, shared) if not args.quick else [],
    }
    print()
    print(
        f"Machine: {info['cpu_model']}, {info['cpus_usable']} usable cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), device {info['device_name']}, load average {info['load_average']}"
    )
    if nt_versions:
        nt_line = f"neural-tangents {nt_versions['nt_version']}, jax {nt_versions['jax_version']}"
        print(f"{nt_line} on {nt_versions['device']}")
    elif any(c in NT_CONTENDERS for c in contenders):
        print(f"neural-tangents: skipped ({nt_reason})")
    for run in runs:
        print()
        print(format_table(run))
    if result["targets"]:
        print("Targets (ntkmonitor:auto):")
        for check in result["targets"]:
            print(f"  [{'met' if check['met'] else 'MISSED'}] {check['target']}: {check['value']:.3g}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
