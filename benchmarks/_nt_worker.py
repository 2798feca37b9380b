"""neural-tangents side of ``benchmarks/bench_entk.py``: one ``empirical_ntk_fn`` implementation, one workload.

Runs with the Python of a separate neural-tangents environment (see ``bench_entk.py``'s docstring)::

    /work/nt-venv/bin/python benchmarks/_nt_worker.py SPEC.json

``SPEC.json`` (written by ``bench_entk.py``) names an ``.npz`` with the torch model's parameters, buffers
and inputs (``x``), the architecture and its configuration, the mode (``"trace"`` or ``"full"``), the
implementation (a member of ``nt.NtkImplementation``) and the number of timed runs. The forward pass is
rebuilt in plain ``jax.numpy`` / ``jax.lax``, mirroring the torch module of ``bench_entk.py`` exactly
(same parameter names, eval-mode BatchNorm on the running statistics, the same attention math), in
float32 (``jax_enable_x64`` off).

Protocol: ``jax.jit(lambda x, p: kernel_fn(x, None, p))`` is lowered and compiled (timed separately as
``compile_s``, excluded from the run times); the resident set size (RSS) is read; the peak-RSS
watermark is reset (``/proc/self/clear_refs``); one warm call, then ``repeats`` timed calls, each
``block_until_ready``; the peak memory is the watermark minus the RSS before the warm call. XLA's
own buffer plan (``compiled.memory_analysis()``) is reported too when available. The kernel goes
to ``kernel_out`` (``.npy``), the timings etc. to ``out`` (JSON).

``neural-tangents``' ``trace_axes=(-1,)`` divides the trace by the number of traced outputs
(``_trace_and_diagonal``: ``ntk / contract_size``), i.e. it is the *mean* over the outputs, the same
convention as ``ntkmonitor``'s ``mode="trace"``; ``trace_axes=()`` gives ``(n1, n2, k, k)``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

from _peak_rss import proc_status_kib, reset_peak_rss

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_apply_fn(arch: str, config: dict, consts: dict):
    """The forward pass ``apply_fn(params, x)`` of a ``bench_entk.py`` architecture in jax.numpy.

    Args:
        arch: ``"mlp"``, ``"resnet"``, ``"mobilenet"`` or ``"transformer"``.
        config: the architecture's configuration (the same dict that builds the torch module).
        consts: the torch module's buffers by ``state_dict`` name (BatchNorm running statistics).

    Returns:
        ``apply_fn(params, x)`` with ``params`` a dict by torch parameter name and ``x`` batched.
    """
    import jax
    import jax.numpy as jnp

    def linear(p, name, h):
        return h @ p[name + ".weight"].T + p[name + ".bias"]

    if arch == "mlp":
        names = [str(2 * i) for i in range(len(config["dims"]) - 1)]

        def apply_fn(p, x):
            h = x
            for i, name in enumerate(names):
                h = linear(p, name, h)
                if i < len(names) - 1:
                    h = jax.nn.relu(h)
            return h

        return apply_fn

    if arch in ("resnet", "mobilenet"):
        eps = 1e-5

        def conv(h, w, stride, pad, groups=1):
            return jax.lax.conv_general_dilated(
                h,
                w,
                (stride, stride),
                ((pad, pad), (pad, pad)),
                dimension_numbers=("NCHW", "OIHW", "NCHW"),
                feature_group_count=groups,
            )

        def bn(p, name, h):  # eval-mode F.batch_norm: (x - mean) * rsqrt(var + eps) * weight + bias
            mean = consts[name + ".running_mean"][None, :, None, None]
            inv = (1.0 / jnp.sqrt(consts[name + ".running_var"] + eps))[None, :, None, None]
            return (h - mean) * inv * p[name + ".weight"][None, :, None, None] + p[name + ".bias"][None, :, None, None]

        if arch == "mobilenet":

            def relu6(h):
                return jnp.clip(h, 0.0, 6.0)

            def apply_fn(p, x):
                h = relu6(bn(p, "bn1", conv(x, p["conv1.weight"], 1, 1)))
                cin = config["stem"]
                for i, (cout, stride, expand) in enumerate(config["blocks"]):
                    pre, hidden = f"layers.{i}.", cin * expand
                    out = relu6(bn(p, pre + "bn1", conv(h, p[pre + "expand.weight"], 1, 0)))
                    out = relu6(bn(p, pre + "bn2", conv(out, p[pre + "depthwise.weight"], stride, 1, hidden)))
                    out = bn(p, pre + "bn3", conv(out, p[pre + "project.weight"], 1, 0))
                    h = h + out if stride == 1 and cin == cout else out
                    cin = cout
                return linear(p, "fc", h.mean(axis=(2, 3)))

            return apply_fn

        blocks = []
        cin = config["stem"]
        for cout, stride in config["blocks"]:
            blocks.append((stride, stride != 1 or cin != cout))
            cin = cout

        def apply_fn(p, x):
            h = jax.nn.relu(bn(p, "bn1", conv(x, p["conv1.weight"], 1, 1)))
            for i, (stride, has_shortcut) in enumerate(blocks):
                pre = f"layers.{i}."
                out = jax.nn.relu(bn(p, pre + "bn1", conv(h, p[pre + "conv1.weight"], stride, 1)))
                out = bn(p, pre + "bn2", conv(out, p[pre + "conv2.weight"], 1, 1))
                short = h
                if has_shortcut:
                    short = bn(p, pre + "shortcut.1", conv(h, p[pre + "shortcut.0.weight"], stride, 0))
                h = jax.nn.relu(out + short)
            return linear(p, "fc", h.mean(axis=(2, 3)))

        return apply_fn

    if arch == "transformer":
        d, heads, eps = config["d"], config["heads"], 1e-5
        dh = d // heads

        def layer_norm(p, name, h):
            mean = h.mean(-1, keepdims=True)
            var = ((h - mean) ** 2).mean(-1, keepdims=True)
            return (h - mean) / jnp.sqrt(var + eps) * p[name + ".weight"] + p[name + ".bias"]

        def attention(p, pre, h):  # nn.MultiheadAttention(batch_first=True), need_weights=False
            b, s, _ = h.shape
            qkv = h @ p[pre + "in_proj_weight"].T + p[pre + "in_proj_bias"]
            q, k, v = (t.reshape(b, s, heads, dh).transpose(0, 2, 1, 3) for t in jnp.split(qkv, 3, axis=-1))
            att = jax.nn.softmax((q @ k.transpose(0, 1, 3, 2)) / jnp.sqrt(float(dh)), axis=-1)
            o = (att @ v).transpose(0, 2, 1, 3).reshape(b, s, d)
            return linear(p, pre + "out_proj", o)

        def apply_fn(p, ids):
            h = p["embed.weight"][ids] + p["pos"][: ids.shape[1]]
            for i in range(config["layers"]):
                pre = f"layers.{i}."  # nn.TransformerEncoderLayer, norm_first=False, ReLU, eval (no dropout)
                h = layer_norm(p, pre + "norm1", h + attention(p, pre + "self_attn.", h))
                ff = linear(p, pre + "linear2", jax.nn.relu(linear(p, pre + "linear1", h)))
                h = layer_norm(p, pre + "norm2", h + ff)
            return linear(p, "head", h.mean(axis=1))

        return apply_fn

    raise ValueError(f"unknown architecture {arch!r}")


def run(spec: dict) -> dict:
    """Compile and time one ``empirical_ntk_fn`` implementation; write the kernel; return the record.

    Args:
        spec: see the module docstring.

    Returns:
        ``{"times_s", "compile_s", "peak_mib", "xla_memory", "jax_version", "nt_version", "device", ...}``.
    """
    import jax

    jax.config.update("jax_enable_x64", False)
    import jax.numpy as jnp
    import neural_tangents as nt
    import numpy as np

    data = np.load(spec["npz"])
    params = {name: jnp.asarray(data["p:" + name], dtype=jnp.float32) for name in spec["param_names"]}
    consts = {name: jnp.asarray(data["b:" + name], dtype=jnp.float32) for name in spec["buffer_names"]}
    x_np = data["x"]
    x = jnp.asarray(x_np, dtype=jnp.int32 if x_np.dtype.kind in "iu" else jnp.float32)
    apply_fn = make_apply_fn(spec["arch"], spec["config"], consts)

    implementation = getattr(nt.NtkImplementation, spec["implementation"])
    trace_axes = (-1,) if spec["mode"] == "trace" else ()
    kernel_fn = nt.empirical_ntk_fn(apply_fn, trace_axes=trace_axes, vmap_axes=0, implementation=implementation)
    jitted = jax.jit(lambda x1, p: kernel_fn(x1, None, p))

    start = time.perf_counter()
    compiled = jitted.lower(x, params).compile()
    compile_s = time.perf_counter() - start
    xla_memory = None
    try:
        analysis = compiled.memory_analysis()
        if analysis is not None:
            xla_memory = {
                key: int(getattr(analysis, key))
                for key in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
                if hasattr(analysis, key)
            }
    except Exception as exc:  # noqa: BLE001 - optional diagnostics
        xla_memory = {"error": repr(exc)}

    rss_before = proc_status_kib("VmRSS")
    hwm_reset = reset_peak_rss()
    start = time.perf_counter()
    kernel = compiled(x, params).block_until_ready()  # warm call (not timed in the statistics)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(spec["repeats"]):
        kernel = None
        start = time.perf_counter()
        kernel = compiled(x, params).block_until_ready()
        times.append(time.perf_counter() - start)
    hwm = proc_status_kib("VmHWM")
    peak_mib = None
    if rss_before is not None and hwm is not None and hwm_reset:
        peak_mib = max(hwm - rss_before, 0) / 1024
    np.save(spec["kernel_out"], np.asarray(kernel))
    device = jax.devices()[0]
    return {
        "times_s": times,
        "median_s": statistics.median(times),
        "warmup_s": warmup_s,
        "compile_s": compile_s,
        "peak_mib": peak_mib,
        "peak_method": "VmHWM - VmRSS after compile" if hwm_reset else "unavailable",
        "xla_memory": xla_memory,
        "kernel_shape": list(kernel.shape),
        "dtype": str(kernel.dtype),
        "jax_version": jax.__version__,
        "jaxlib_version": getattr(__import__("jaxlib"), "__version__", None),
        "nt_version": getattr(nt, "__version__", None),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> None:
    """``_nt_worker.py SPEC.json``: run the spec, write ``spec["out"]``; on failure write the error."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    try:
        record = run(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the benchmark, which keeps going
        import traceback

        record = {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-4000:]}
    with open(spec["out"], "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
