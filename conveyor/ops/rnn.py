"""Recurrent layers: ONNX LSTM and GRU (opsets 7, 14 and later).

Both kernels share one scheme: the input projection X @ W^T (plus the biases that
do not depend on the state) is computed for every time step in one matmul, then a
Python loop runs over time steps only; batch and units are vectorised.

Semantics follow the ONNX operator specification; where the specification is
ambiguous, onnxruntime's CPU kernel decides:

- `clip` bounds the input of every gate activation (after biases and peepholes) to
  [-clip, clip]; the cell state itself is not clipped.
- `input_forget=1` couples the gates: f = 1 - i.
- `activation_alpha` / `activation_beta` are consumed in order by the activations
  that take that parameter (Relu, Tanh, Sigmoid, Softsign and Softplus take none), so
  the lists need hold only the values actually used. Missing values take the
  defaults of the corresponding ONNX operators: LeakyRelu 0.01, ThresholdedRelu 1.0,
  HardSigmoid 0.2/0.5, Elu 1.0, Affine 1.0/0.0, ScaledTanh 1.0/1.0. (onnxruntime
  uses 0 for Affine, ScaledTanh and ThresholdedRelu when a value is missing.)
- `activations` lists one set per direction (forward first): 3 or 6 names for LSTM,
  2 or 4 for GRU, matched case-insensitively.
- `sequence_lens`: per batch entry, steps at or past its length give zeros in Y,
  and Y_h / Y_c hold the state after its last valid step; a length of 0 gives zero
  Y_h / Y_c (as onnxruntime does, not the initial state). The reverse direction
  starts at each sequence's own last valid step.

Under a precision (`run_fixed`), both compute what hls4ml 1.3.0's nnet_recurrent.h
(lstm_static / gru_static) computes, bit for bit, with the same time loop; the types,
casts and what is refused are in docs/numerics.md, "Kernels", item 7.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from conveyor.errors import ModelError, PrecisionError
from conveyor.numerics.cast import cast, is_fixed
from conveyor.ops import fixed, lut
from conveyor.ops.intdot import njit
from conveyor.ops.registry import OpDef, ValueInfo, attr_error, register

# ---- activations --------------------------------------------------------------------

#: canonical name -> (takes alpha, takes beta, default alpha, default beta)
_ACT_PARAMS: dict[str, tuple[bool, bool, float, float]] = {
    "Relu": (False, False, 0.0, 0.0),
    "Tanh": (False, False, 0.0, 0.0),
    "Sigmoid": (False, False, 0.0, 0.0),
    "Affine": (True, True, 1.0, 0.0),
    "LeakyRelu": (True, False, 0.01, 0.0),
    "ThresholdedRelu": (True, False, 1.0, 0.0),
    "ScaledTanh": (True, True, 1.0, 1.0),
    "HardSigmoid": (True, True, 0.2, 0.5),
    "Elu": (True, False, 1.0, 0.0),
    "Softsign": (False, False, 0.0, 0.0),
    "Softplus": (False, False, 0.0, 0.0),
}
_ACT_BY_LOWER = {k.lower(): k for k in _ACT_PARAMS}
_ACCEPTED_ACTS = ", ".join(_ACT_PARAMS)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1/(1+e^-x) written through tanh: no overflow for large |x|.
    half = np.asarray(0.5, x.dtype)
    return half * (np.tanh(half * x) + np.asarray(1.0, x.dtype))


def _make_act(name: str, alpha: float, beta: float) -> Callable[[np.ndarray], np.ndarray]:
    def c(x: np.ndarray, v: float) -> np.ndarray:
        return np.asarray(v, x.dtype)

    if name == "Relu":
        return lambda x: np.maximum(x, c(x, 0.0))
    if name == "Tanh":
        return np.tanh
    if name == "Sigmoid":
        return _sigmoid
    if name == "Affine":
        return lambda x: c(x, alpha) * x + c(x, beta)
    if name == "LeakyRelu":
        return lambda x: np.where(x >= 0, x, c(x, alpha) * x)
    if name == "ThresholdedRelu":
        return lambda x: np.where(x > c(x, alpha), x, c(x, 0.0))
    if name == "ScaledTanh":
        return lambda x: c(x, alpha) * np.tanh(c(x, beta) * x)
    if name == "HardSigmoid":
        return lambda x: np.clip(c(x, alpha) * x + c(x, beta), c(x, 0.0), c(x, 1.0))
    if name == "Elu":
        return lambda x: np.where(x >= 0, x, c(x, alpha) * np.expm1(np.minimum(x, c(x, 0.0))))
    if name == "Softsign":
        return lambda x: x / (c(x, 1.0) + np.abs(x))
    if name == "Softplus":
        return lambda x: np.logaddexp(c(x, 0.0), x)
    raise AssertionError(name)  # guarded by _activations


def _as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _activation_names(node: Any, defaults: tuple[str, ...]) -> list[str]:
    """The canonical activation names of every direction, concatenated (forward first)."""
    ndir = _num_directions(node)
    n = len(defaults)
    names = node.attr("activations")
    if names is None:
        return list(defaults) * ndir
    names = [_as_str(a) for a in names]
    if len(names) != n * ndir:
        raise attr_error(node, "activations", names,
                         f"a list of {n * ndir} names ({n} per direction) from {_ACCEPTED_ACTS}")
    canon = [_ACT_BY_LOWER.get(name.lower()) for name in names]
    if None in canon:
        raise attr_error(node, "activations", names, f"names from {_ACCEPTED_ACTS}")
    return canon


def _activations(node: Any, defaults: tuple[str, ...]) -> list[list[Callable]]:
    """Per direction, the activation functions (f, g[, h]) with their alpha/beta bound."""
    n = len(defaults)
    names = _activation_names(node, defaults)
    alphas = list(node.attr("activation_alpha") or [])
    betas = list(node.attr("activation_beta") or [])
    funcs = []
    for canon in names:
        takes_a, takes_b, da, db = _ACT_PARAMS[canon]
        alpha = float(alphas.pop(0)) if takes_a and alphas else da
        beta = float(betas.pop(0)) if takes_b and betas else db
        funcs.append(_make_act(canon, alpha, beta))
    return [funcs[d * n:(d + 1) * n] for d in range(len(names) // n)]


# ---- attributes and shapes ------------------------------------------------------------

_DIRECTIONS = ("forward", "reverse", "bidirectional")


def _direction(node: Any) -> str:
    d = _as_str(node.attr("direction", "forward"))
    if d not in _DIRECTIONS:
        raise attr_error(node, "direction", d, ", ".join(_DIRECTIONS))
    return d


def _num_directions(node: Any) -> int:
    return 2 if _direction(node) == "bidirectional" else 1


def _layout(node: Any) -> int:
    layout = int(node.attr("layout", 0))
    if layout not in (0, 1):
        raise attr_error(node, "layout", layout, "0 (X is [seq, batch, input]) or 1 (batch first)")
    return layout


def _check(node: Any, gates: int, defaults: tuple[str, ...]) -> None:
    _direction(node)
    _layout(node)
    _activations(node, defaults)
    hs = node.attr("hidden_size")
    if hs is not None and int(hs) <= 0:
        raise attr_error(node, "hidden_size", hs, "a positive integer")
    clip = node.attr("clip")
    if clip is not None and not float(clip) > 0:
        raise attr_error(node, "clip", clip, "a positive float")
    if node.op_type == "LSTM" and int(node.attr("input_forget", 0)) not in (0, 1):
        raise attr_error(node, "input_forget", node.attr("input_forget"), "0 or 1")


def _expect(node: Any, what: str, got: tuple, want: tuple) -> None:
    if tuple(got) != tuple(want):
        raise ModelError(f"{node}: input {what} has shape {tuple(got)}, expected {tuple(want)}")


def _dims(node: Any, shapes: Sequence[tuple | None], gates: int) -> tuple[int, int, int, int, int]:
    """(seq, batch, input, hidden, num_directions), validating every input shape.

    shapes: X, W, R, B, sequence_lens, initial_h, initial_c, P (None when omitted).
    """
    shapes = list(shapes) + [None] * (8 - len(shapes))
    x, w, r = shapes[0], shapes[1], shapes[2]
    if x is None or w is None or r is None:
        raise ModelError(f"{node}: inputs X, W and R are required")
    if len(x) != 3:
        raise ModelError(f"{node}: input X must be 3-D, got shape {tuple(x)}")
    layout = _layout(node)
    seq, batch, inp = (x[1], x[0], x[2]) if layout else tuple(x)
    ndir = _num_directions(node)
    hidden = node.attr("hidden_size")
    hidden = int(hidden) if hidden is not None else int(r[-1])
    _expect(node, "W", w, (ndir, gates * hidden, inp))
    _expect(node, "R", r, (ndir, gates * hidden, hidden))
    if shapes[3] is not None:
        _expect(node, "B", shapes[3], (ndir, 2 * gates * hidden))
    if shapes[4] is not None:
        _expect(node, "sequence_lens", shapes[4], (batch,))
    state = (batch, ndir, hidden) if layout else (ndir, batch, hidden)
    if shapes[5] is not None:
        _expect(node, "initial_h", shapes[5], state)
    if gates == 4:
        if shapes[6] is not None:
            _expect(node, "initial_c", shapes[6], state)
        if shapes[7] is not None:
            _expect(node, "P", shapes[7], (ndir, 3 * hidden))
    return int(seq), int(batch), int(inp), hidden, ndir


def _infer(node: Any, ins: Sequence[ValueInfo | None], gates: int, n_out: int) -> list[tuple]:
    seq, batch, _, hidden, ndir = _dims(node, [v.shape if v is not None else None for v in ins], gates)
    dtype = ins[0].dtype
    if _layout(node):
        y, state = (batch, seq, ndir, hidden), (batch, ndir, hidden)
    else:
        y, state = (seq, ndir, batch, hidden), (ndir, batch, hidden)
    return [(y, dtype)] + [(state, dtype)] * (n_out - 1)


def _macs(node: Any, ins: Sequence[ValueInfo | None], gates: int) -> int:
    """MACs for all `seq` steps (sequence_lens are runtime values, so the full length).

    Per step, direction and batch entry:
      LSTM: 4*H*(I+H) matrix products, + 3*H elementwise products (f*C, i*c, o*h(C)),
            + 3*H peephole products when P is given.
      GRU:  3*H*(I+H) matrix products, + 3*H elementwise products (r*h, z*h, (1-z)*h~).
    Activations and additions are not counted.
    """
    shapes = [v.shape if v is not None else None for v in ins]
    seq, batch, inp, hidden, ndir = _dims(node, shapes, gates)
    per_step = gates * hidden * (inp + hidden) + 3 * hidden
    if gates == 4 and len(shapes) > 7 and shapes[7] is not None:
        per_step += 3 * hidden
    return int(per_step) * seq * batch * ndir


# ---- time loop -------------------------------------------------------------------------

def _order(lens: np.ndarray | None, seq: int, batch: int, reverse: bool) -> np.ndarray | None:
    """idx[s, b]: the time index batch entry b processes at loop step s (None: identity).

    A permutation of 0..seq-1 per column: the valid steps in processing order, then
    the padding steps (which the mask ignores).
    """
    if not reverse:
        return None
    s = np.arange(seq)[:, None]
    if lens is None:
        return np.broadcast_to(seq - 1 - s, (seq, batch))
    return np.where(s < lens[None, :], lens[None, :] - 1 - s, s)


def _gather(a: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    if idx is None:
        return a
    return a[idx, np.arange(a.shape[1])[None, :]]


def _scatter(a: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    if idx is None:
        return a
    out = np.empty_like(a)
    out[idx, np.arange(a.shape[1])[None, :]] = a
    return out


def _prepare(node: Any, arrays: Sequence[np.ndarray | None], gates: int):
    a = list(arrays) + [None] * (8 - len(arrays))
    seq, batch, inp, hidden, ndir = _dims(node, [v.shape if v is not None else None for v in a], gates)
    layout = _layout(node)
    x = a[0]
    dt = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    x = x.astype(dt, copy=False)
    if layout:
        x = x.transpose(1, 0, 2)

    def state(v):
        if v is None:
            return np.zeros((ndir, batch, hidden), dt)
        v = v.astype(dt, copy=False)
        return v.transpose(1, 0, 2) if layout else v

    lens = None
    if a[4] is not None:
        lens = np.asarray(a[4]).astype(np.int64)
        if lens.size and (lens.min() < 0 or lens.max() > seq):
            raise ModelError(f"{node}: sequence_lens {lens.tolist()} must lie in [0, {seq}]")
        if np.all(lens == seq):
            lens = None
    clip = node.attr("clip")
    return dict(
        x=x, w=a[1].astype(dt, copy=False), r=a[2].astype(dt, copy=False),
        b=None if a[3] is None else a[3].astype(dt, copy=False),
        lens=lens, h0=state(a[5]), c0=state(a[6]),
        p=None if a[7] is None else a[7].astype(dt, copy=False),
        seq=seq, batch=batch, hidden=hidden, ndir=ndir, layout=layout, dtype=dt,
        clip=None if clip is None else (np.asarray(-float(clip), dt), np.asarray(float(clip), dt)),
        reverse={"forward": [False], "reverse": [True], "bidirectional": [False, True]}[_direction(node)],
    )


def _finish(p: dict, ys: list, hs: list, cs: list | None) -> tuple[np.ndarray, ...]:
    y = np.stack(ys, axis=1)                  # [seq, ndir, batch, hidden]
    h = np.stack(hs, axis=0)                  # [ndir, batch, hidden]
    outs = [y, h] + ([np.stack(cs, axis=0)] if cs is not None else [])
    if p["layout"]:
        outs = [outs[0].transpose(2, 0, 1, 3)] + [o.transpose(1, 0, 2) for o in outs[1:]]
    return tuple(np.ascontiguousarray(o, dtype=p["dtype"]) for o in outs)


# The float32 tanh of onnxruntime's LSTM (MLAS `MlasComputeTanh`, the rational approximation of
# Eigen's `generic_fast_tanh_float`, Eigen/src/Core/MathFunctionsImpl.h): x clamped to
# +-7.90531110763549805, tanh(x) = x * P(x^2) / Q(x^2). Measured against float64 tanh over
# [-12, 12] and 1e-8..1: at most 3.6e-7 from it (6 float32 ulps; numpy's float32 tanh: 1.4).
_TANH_CLAMP = 7.90531110763549805
_TANH_P = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
           -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)

if njit is not None:
    @njit(cache=True, nogil=True, inline="always")
    def _rtanh(x):
        f = np.float32
        x = min(max(x, f(-_TANH_CLAMP)), f(_TANH_CLAMP))
        x2 = x * x
        p = f(_TANH_P[6])
        p = p * x2 + f(_TANH_P[5])
        p = p * x2 + f(_TANH_P[4])
        p = p * x2 + f(_TANH_P[3])
        p = p * x2 + f(_TANH_P[2])
        p = p * x2 + f(_TANH_P[1])
        p = p * x2 + f(_TANH_P[0])
        q = f(_TANH_Q[3])
        q = q * x2 + f(_TANH_Q[2])
        q = q * x2 + f(_TANH_Q[1])
        q = q * x2 + f(_TANH_Q[0])
        return x * p / q

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def _lstm_steps(xw, rk, h, c, y):
        """The float32 LSTM time loop with ONNX's default activations, no peepholes, clip or
        sequence lengths: xw (seq, batch, 4H) the input projections plus both biases (gates
        i, o, f, c), rk (H, 4H) the recurrence weights transposed (R^T); h, c (batch, H) the
        state, updated in place; y (seq, batch, H) the outputs. R h is summed in float32 in any
        order (as BLAS would): here k ascending per gate unit, k the outer loop and the unit the
        inner one, which the compiler vectorises (no reduction in it; the benchmark's 32 steps
        of 64 units: the products 28 us, the node 77 -> 64 us); sigmoid(v) = (tanh(v / 2) + 1) / 2 (as `_sigmoid`),
        tanh is `_rtanh`."""
        seq, batch, g4 = xw.shape
        hid = g4 // 4
        half = np.float32(0.5)
        one = np.float32(1.0)
        gts = np.empty(g4, np.float32)
        acc = np.empty(g4, np.float32)
        for t in range(seq):
            for b in range(batch):
                hb = h[b]
                xt = xw[t, b]
                acc[:] = np.float32(0)
                for k in range(hid):
                    hk = hb[k]
                    rkk = rk[k]
                    for j in range(g4):
                        acc[j] += rkk[j] * hk
                for j in range(g4):
                    gts[j] = xt[j] + acc[j]
                for j in range(3 * hid):
                    gts[j] = half * (_rtanh(half * gts[j]) + one)
                cb = c[b]
                for j in range(hid):
                    cc = gts[2 * hid + j] * cb[j] + gts[j] * _rtanh(gts[3 * hid + j])
                    cb[j] = cc
                    hb[j] = gts[hid + j] * _rtanh(cc)
                    y[t, b, j] = hb[j]
else:  # pragma: no cover - depends on the install
    _lstm_steps = None


def _lstm_fast(node: Any, p: dict, acts) -> bool:
    """Whether `_lstm_steps` computes this LSTM: float32, default activations, nothing else."""
    return (_lstm_steps is not None and p["dtype"] == np.float32 and p["p"] is None and p["clip"] is None
            and p["lens"] is None and not int(node.attr("input_forget", 0))
            and all(a == ["Sigmoid", "Tanh", "Tanh"] for a in _activation_names_per_dir(node)))


def _activation_names_per_dir(node: Any) -> list[list[str]]:
    names = _activation_names(node, ("Sigmoid", "Tanh", "Tanh"))
    return [names[i:i + 3] for i in range(0, len(names), 3)]


def _lstm_prepare(node: Any, ins: Sequence[ValueInfo | None]):
    """`OpDef.prepare`: for an LSTM that `_lstm_steps` computes (float32, default activations, no
    peepholes, clip, sequence lengths or input_forget) with constant W, R and B, the weights laid
    out once (W^T, R, the summed biases); a run is one GEMM for the input part of every step and
    gate, the compiled time loop per direction, and the outputs' layout. None otherwise."""
    a = list(ins) + [None] * (8 - len(ins))
    if (_lstm_steps is None or a[0].dtype != np.float32 or any(a[k] is None or a[k].value is None for k in (1, 2))
            or (a[3] is not None and a[3].value is None) or a[4] is not None or a[7] is not None
            or node.attr("clip") is not None or int(node.attr("input_forget", 0))
            or any(n != ["Sigmoid", "Tanh", "Tanh"] for n in _activation_names_per_dir(node))):
        return None
    seq, batch, inp, hid, ndir = _dims(node, [v.shape if v is not None else None for v in a], 4)
    layout = _layout(node)
    f32 = np.float32
    wt = [np.ascontiguousarray(np.asarray(a[1].value[d], f32).T) for d in range(ndir)]
    rr = [np.ascontiguousarray(np.asarray(a[2].value[d], f32).T) for d in range(ndir)]  # R^T (_lstm_steps)
    bias = [None if a[3] is None else
            (np.asarray(a[3].value[d, :4 * hid], f32) + np.asarray(a[3].value[d, 4 * hid:], f32)) for d in range(ndir)]
    reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[_direction(node)]

    def state(v):
        if v is None:
            return np.zeros((ndir, batch, hid), f32)
        v = np.asarray(v, f32)
        return v.transpose(1, 0, 2) if layout else v

    def run(arrays):
        arrays = list(arrays) + [None] * (8 - len(arrays))
        x = np.asarray(arrays[0], f32)
        if layout:
            x = x.transpose(1, 0, 2)
        x2 = x.reshape(seq * batch, inp)
        h0, c0 = state(arrays[5]), state(arrays[6])
        y = np.empty((seq, ndir, batch, hid), f32)
        hs = np.array(h0, dtype=f32)  # (ndir, batch, hid), updated in place
        cs = np.array(c0, dtype=f32)
        for d in range(ndir):
            xw = (x2 @ wt[d]).reshape(seq, batch, 4 * hid)
            if bias[d] is not None:
                xw += bias[d]
            yd = np.empty((seq, batch, hid), f32)
            if reverse[d]:
                _lstm_steps(np.ascontiguousarray(xw[::-1]), rr[d], hs[d], cs[d], yd)
                y[:, d] = yd[::-1]
            else:
                _lstm_steps(xw, rr[d], hs[d], cs[d], yd)
                y[:, d] = yd
        if layout:
            return (np.ascontiguousarray(y.transpose(2, 0, 1, 3)), np.ascontiguousarray(hs.transpose(1, 0, 2)),
                    np.ascontiguousarray(cs.transpose(1, 0, 2)))
        return (y, hs, cs)
    return run


def _lstm_run(node: Any, arrays: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    p = _prepare(node, arrays, 4)
    acts = _activations(node, ("Sigmoid", "Tanh", "Tanh"))
    seq, batch, hid, dt = p["seq"], p["batch"], p["hidden"], p["dtype"]
    input_forget = bool(int(node.attr("input_forget", 0)))
    clip, lens = p["clip"], p["lens"]
    one = np.asarray(1.0, dt)
    fast = _lstm_fast(node, p, acts)
    ys, hs, cs = [], [], []
    for d in range(p["ndir"]):
        f, g, hact = acts[d]
        w, r = p["w"][d], p["r"][d]
        xw = (p["x"].reshape(seq * batch, -1) @ w.T).reshape(seq, batch, 4 * hid)
        if p["b"] is not None:
            xw += p["b"][d, :4 * hid] + p["b"][d, 4 * hid:]
        idx = _order(lens, seq, batch, p["reverse"][d])
        xw = _gather(xw, idx)
        if p["p"] is not None:
            pi, po, pf = p["p"][d, :hid], p["p"][d, hid:2 * hid], p["p"][d, 2 * hid:]
        h, c = p["h0"][d], p["c0"][d]
        y = np.zeros((seq, batch, hid), dt)
        if fast:
            h, c = np.array(h), np.array(c)
            _lstm_steps(np.ascontiguousarray(xw), np.ascontiguousarray(np.asarray(r).T), h, c, y)
            ys.append(_scatter(y, idx))
            hs.append(h)
            cs.append(c)
            continue
        rt = np.ascontiguousarray(r.T)
        for t in range(seq):
            gts = xw[t] + h @ rt
            gi, go, gf, gc = (gts[:, k * hid:(k + 1) * hid] for k in range(4))
            if p["p"] is not None:
                gi = gi + pi * c
                gf = gf + pf * c
            if clip is not None:
                gi, gf, gc = (np.clip(v, *clip) for v in (gi, gf, gc))
            i = f(gi)
            fg = one - i if input_forget else f(gf)
            c_new = fg * c + i * g(gc)
            if p["p"] is not None:
                go = go + po * c_new
            if clip is not None:
                go = np.clip(go, *clip)
            h_new = f(go) * hact(c_new)
            if lens is not None:
                valid = (t < lens)[:, None]
                h = np.where(valid, h_new, h)
                c = np.where(valid, c_new, c)
                y[t] = np.where(valid, h_new, 0)
            else:
                h, c = h_new, c_new
                y[t] = h_new
        if lens is not None and not lens.all():
            # onnxruntime's convention: a sequence of length 0 has zero final states.
            h = np.where((lens > 0)[:, None], h, 0).astype(dt, copy=False)
            c = np.where((lens > 0)[:, None], c, 0).astype(dt, copy=False)
        ys.append(_scatter(y, idx))
        hs.append(h)
        cs.append(c)
    return _finish(p, ys, hs, cs)


def _gru_run(node: Any, arrays: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    p = _prepare(node, arrays, 3)
    acts = _activations(node, ("Sigmoid", "Tanh"))
    seq, batch, hid, dt = p["seq"], p["batch"], p["hidden"], p["dtype"]
    lbr = bool(int(node.attr("linear_before_reset", 0)))
    clip, lens = p["clip"], p["lens"]
    one = np.asarray(1.0, dt)
    ys, hs = [], []
    for d in range(p["ndir"]):
        f, g = acts[d]
        w, r = p["w"][d], p["r"][d]
        xw = (p["x"].reshape(seq * batch, -1) @ w.T).reshape(seq, batch, 3 * hid)
        rbh = None
        if p["b"] is not None:
            wb, rb = p["b"][d, :3 * hid], p["b"][d, 3 * hid:]
            xw += wb
            xw[..., :2 * hid] += rb[:2 * hid]
            if lbr:
                rbh = rb[2 * hid:]
            else:
                xw[..., 2 * hid:] += rb[2 * hid:]
        idx = _order(lens, seq, batch, p["reverse"][d])
        xw = _gather(xw, idx)
        rzr_t = np.ascontiguousarray(r[:2 * hid].T)
        rh_t = np.ascontiguousarray(r[2 * hid:].T)
        r_all_t = np.ascontiguousarray(r.T)
        h = p["h0"][d]
        y = np.zeros((seq, batch, hid), dt)
        for t in range(seq):
            if lbr:
                hr = h @ r_all_t
                gzr = xw[t, :, :2 * hid] + hr[:, :2 * hid]
                hh = hr[:, 2 * hid:] if rbh is None else hr[:, 2 * hid:] + rbh
            else:
                gzr = xw[t, :, :2 * hid] + h @ rzr_t
            if clip is not None:
                gzr = np.clip(gzr, *clip)
            gzr = f(gzr)
            z, rg = gzr[:, :hid], gzr[:, hid:]
            if lbr:
                gh = xw[t, :, 2 * hid:] + rg * hh
            else:
                gh = xw[t, :, 2 * hid:] + (rg * h) @ rh_t
            if clip is not None:
                gh = np.clip(gh, *clip)
            h_new = (one - z) * g(gh) + z * h
            if lens is not None:
                valid = (t < lens)[:, None]
                h = np.where(valid, h_new, h)
                y[t] = np.where(valid, h_new, 0)
            else:
                h = h_new
                y[t] = h_new
        if lens is not None and not lens.all():
            h = np.where((lens > 0)[:, None], h, 0).astype(dt, copy=False)
        ys.append(_scatter(y, idx))
        hs.append(h)
    return _finish(p, ys, hs, None)


# ---- bit-accurate kernels: hls4ml's nnet_recurrent.h (docs/numerics.md, "Kernels", item 7) ---
#
# Per time step, hls4ml 1.3.0's lstm_static / gru_static (Vivado, io_parallel, latency):
#   tmpres       = dense(x, W, Wb)           accum_t, nnet::dense_latency's casts
#   tmpres_state = dense(h, R, Rb)           accum_t
#   pre          = (accum_t)(tmpres + tmpres_state)
#   gates        = (accum_t) table[index(pre)]          sigmoid / tanh tables (or relu)
#   LSTM: c = (cell_t)(g*i + c*f);  h = (state_t)(o * (accum_t) tanh_table[index(c)])
#   GRU:  hh = act((accum_t)(tmpres_h + (accum_t)(r * tmpres_state_h)))
#         h = (state_t)(hh * (1 - z) + h * z)
# Products and sums of ap_fixed values are exact; only the assignments round or overflow.
# Gates stay in ONNX order (LSTM i o f c, GRU z r h): every output of a dense is computed on
# its own, so the order of the outputs changes no bits, only which gate is which.

#: x [rows, K] @ w [K, N] with hls4ml's dense_latency order (input index ascending)
_DENSE = fixed.DotSpec(float_dot=lambda node, x, w: x @ w, reduce_len=lambda w: w.shape[0],
                       taps=lambda node, x, w: fixed.matmul_taps(x, w), rows=True, matrix=fixed.matmul_matrix)

#: the activations hls4ml's recurrent layers take (nnet_recr_activations.h)
_FIXED_ACTS = ("Sigmoid", "Tanh", "Relu")


class _FixedAct:
    """hls4ml's nnet::activation::{sigmoid, tanh, relu}<data_T, accum_t>: the result is
    accum_t (`A`; None = 'auto': the table value or the input, exactly)."""

    def __init__(self, node: Any, prec: Any, name: str, A: Any):
        self.A = A
        self.table = None
        if name in ("Sigmoid", "Tanh"):
            make = lut.sigmoid_table if name == "Sigmoid" else lut.tanh_table
            self.table = make(*lut.range_spec(node, prec, name.lower()))
            self.values = self.table.values if A is None else A.quantize(self.table.values)

    def out_frac(self, in_frac: int) -> int:
        """Fractional bits of the result grid, for an input on a 2^-in_frac grid."""
        if self.A is not None:
            return self.A.frac_bits
        return self.table.fmt.frac_bits if self.table is not None else in_frac

    def __call__(self, x: np.ndarray, frac: int) -> np.ndarray:
        if self.table is not None:
            return self.values[self.table.index(x, frac)]
        y = np.maximum(x, 0.0) + 0.0     # relu: data > 0 ? data : 0
        return y if self.A is None else self.A.quantize(y)


def _value_range(a: np.ndarray) -> tuple[float, float]:
    return (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)


def _absmax(a: np.ndarray) -> float:
    return max(-float(a.min()), float(a.max())) if a.size else 0.0  # no |a| temporary


def _exact(node: Any, terms: Sequence[tuple[np.ndarray, int, np.ndarray, int]], what: str) -> None:
    """A sum of products a*b of grid values (a on 2^-fa, b on 2^-fb) must be exact in float64."""
    bound = sum(_absmax(a) * _absmax(b) for a, _, b, _ in terms)
    lut.require_exact(node, bound, max(fa + fb for _, fa, _, fb in terms), what)


def _fixed_setup(node: Any, args: Sequence, fmts: Sequence, prec: Any, gates: int):
    """Refuse what hls4ml's recurrent layers do not compute; the formats of the kernel."""
    acts = _activation_names(node, ("Sigmoid", "Tanh", "Tanh") if gates == 4 else ("Sigmoid", "Tanh"))
    bad = sorted({a for a in acts if a not in _FIXED_ACTS})
    if bad:
        raise PrecisionError(f"{node}: activations {bad} have no bit-accurate kernel; accepted: "
                             f"{', '.join(_FIXED_ACTS)} (hls4ml's recurrent activations)")
    if node.attr("clip") is not None:
        raise PrecisionError(f"{node}: clip={node.attr('clip')} has no bit-accurate kernel (hls4ml's recurrent "
                             "layers do not clip); accepted: no clip attribute")
    if gates == 4:
        if int(node.attr("input_forget", 0)):
            raise PrecisionError(f"{node}: input_forget=1 has no bit-accurate kernel (hls4ml's LSTM computes "
                                 "the forget gate); accepted: input_forget=0")
        if len(args) > 7 and args[7] is not None and np.any(args[7] != 0):
            raise PrecisionError(f"{node}: peephole weights P have no bit-accurate kernel (hls4ml's LSTM has "
                                 "none); accepted: no P input, or P all zeros")
    state = prec.state if prec.state is not None else prec.result
    cell = prec.cell if prec.cell is not None else prec.result
    named = {"input X": fmts[0], "W": fmts[1], "R": fmts[2], "result": prec.result, "state": state}
    if gates == 4:
        named["cell"] = cell
    if len(args) > 3 and args[3] is not None:
        named["B"] = fmts[3]
    for what, fmt in named.items():
        if not is_fixed(fmt):
            raise PrecisionError(
                f"{node}: the {what} format is {fmt}; the recurrent kernels index lookup tables by the bits "
                "of ap_fixed values; accepted: ap_fixed/ap_ufixed formats for input, weight, bias, result, "
                "state and cell")
    A = prec.accum
    if A is not None and not is_fixed(A):
        raise PrecisionError(f"{node}: accum format {A} is a block format; accepted: ap_fixed or 'auto'")
    n = len(acts) // _num_directions(node)
    fns = [_FixedAct(node, prec, a, A) for a in acts]
    return [fns[d * n:(d + 1) * n] for d in range(_num_directions(node))], state, cell, A


def _cast_to(A: Any) -> Callable[[np.ndarray], np.ndarray]:
    """`(accum_t) v` for the kernels' fresh sums (`numerics.cast`: one rounding when nothing
    overflows, FixedType.quantize otherwise; the same bits)."""
    return lambda v: cast(v, A, -1, inplace=True)


def _frac(fmt: Any) -> int:
    return fmt.frac_bits


def _auto_frac(*fracs: int) -> int:
    """'auto' accumulator: a grid that holds every value of a sum (table indexing needs its LSB)."""
    return max(0, *fracs)


def _lstm_fixed(node: Any, args: Sequence, fmts: Sequence, prec: Any, ctx: Any):
    plans = lut.node_plans(ctx, node, args, fmts, prec, (1, 2, 3, 7))
    if plans is not None and "setup" in plans:
        acts, S, C, A = plans["setup"]
    else:
        acts, S, C, A = _fixed_setup(node, args, fmts, prec, 4)
        if plans is not None:
            plans["setup"] = acts, S, C, A
    p = _prepare(node, args, 4)
    seq, batch, hid, lens = p["seq"], p["batch"], p["hidden"], p["lens"]
    fx, fw, fr = fmts[0], fmts[1], fmts[2]
    fb = fmts[3] if p["b"] is not None else None
    cast_acc = (lambda v: v) if A is None else _cast_to(A)
    pre_frac = A.frac_bits if A is not None else _auto_frac(
        _frac(fx) + _frac(fw), _frac(S) + _frac(fr), _frac(fb) if fb is not None else 0)
    # (no initial state: zeros, which every format holds)
    h0 = S.quantize(p["h0"]) if len(args) > 5 and args[5] is not None else p["h0"]
    c0 = C.quantize(p["c0"]) if len(args) > 6 and args[6] is not None else p["c0"]
    ys, hs, cs = [], [], []
    for d in range(p["ndir"]):
        fa, ga, ha = acts[d]
        wb = rb = None
        if p["b"] is not None:
            wb, rb = p["b"][d, :4 * hid], p["b"][d, 4 * hid:]
        if lens is None and not getattr(ctx, "observe", False):  # the whole time loop, compiled
            from conveyor.ops import intrnn

            xs = p["x"][::-1] if p["reverse"][d] else p["x"]
            plan = plans.get(d, False) if plans is not None else False
            if plan is False:  # (None: the kernel does not compute this direction)
                plan = intrnn.lstm_plan(fx, p["w"][d], p["r"][d], wb, rb, fw, fr, fb, A, acts[d], S, C,
                                        getattr(ctx, "value_range", None) or _value_range)
                if plans is not None:
                    plans[d] = plan
            got = None if plan is None else intrnn.lstm_run(plan, xs, h0[d], c0[d])
            if got is not None:
                ys.append(got[0][::-1] if p["reverse"][d] else got[0])
                hs.append(got[1])
                cs.append(got[2])
                continue
        x2 = p["x"].reshape(seq * batch, -1)
        xw = fixed.accumulate(_DENSE, node, x2, np.ascontiguousarray(p["w"][d].T), wb, fx, fw, fb, A,
                              in_range=True)
        idx = _order(lens, seq, batch, p["reverse"][d])
        xw = _gather(xw.reshape(seq, batch, 4 * hid), idx)
        rt = np.ascontiguousarray(p["r"][d].T)
        f_frac, g_frac = fa.out_frac(pre_frac), ga.out_frac(pre_frac)
        tanh_frac = ha.out_frac(_frac(C))
        h, c = h0[d], c0[d]
        y = np.zeros((seq, batch, hid))
        for t in range(seq):
            hr = fixed.accumulate(_DENSE, node, h, rt, rb, S, fr, fb, A, in_range=True)
            pre = cast_acc(xw[t] + hr)                      # inputacc_ifo / inputacc_c
            iof = fa(pre[:, :3 * hid], pre_frac)            # ONNX i, o, f
            i, o, fg = iof[:, :hid], iof[:, hid:2 * hid], iof[:, 2 * hid:]
            g = ga(pre[:, 3 * hid:], pre_frac)
            _exact(node, [(g, g_frac, i, f_frac), (c, _frac(C), fg, f_frac)], "cell updates g*i + c*f")
            c_new = _cast_state(ctx, node, g * i + c * fg, C)
            tc = ha(c_new, _frac(C))
            _exact(node, [(o, f_frac, tc, tanh_frac)], "products o*act(c)")
            h_new = _cast_state(ctx, node, o * tc, S)
            if lens is not None:
                valid = (t < lens)[:, None]
                h, c = np.where(valid, h_new, h), np.where(valid, c_new, c)
                y[t] = np.where(valid, h_new, 0.0)
            else:
                h, c = h_new, c_new
                y[t] = h_new
        if lens is not None and not lens.all():
            h = np.where((lens > 0)[:, None], h, 0.0)
            c = np.where((lens > 0)[:, None], c, 0.0)
        ys.append(_scatter(y, idx))
        hs.append(h)
        cs.append(c)
    return _fixed_outputs(node, p, ctx, prec.result, [(ys, S), (hs, S), (cs, C)])


def _gru_fixed(node: Any, args: Sequence, fmts: Sequence, prec: Any, ctx: Any):
    acts, S, _, A = _fixed_setup(node, args, fmts, prec, 3)
    p = _prepare(node, args, 3)
    seq, batch, hid, lens = p["seq"], p["batch"], p["hidden"], p["lens"]
    lbr = bool(int(node.attr("linear_before_reset", 0)))
    fx, fw, fr = fmts[0], fmts[1], fmts[2]
    fb = fmts[3] if p["b"] is not None else None
    cast_acc = (lambda v: v) if A is None else _cast_to(A)
    fbf = _frac(fb) if fb is not None else 0
    x_frac = _frac(fx) + _frac(fw)                 # grid of tmpres (with the bias's) under 'auto'
    h_frac = _frac(S) + _frac(fr)                  # grid of tmpres_state
    zr_frac = A.frac_bits if A is not None else _auto_frac(x_frac, h_frac, fbf)
    h0 = S.quantize(p["h0"])
    ys, hs = [], []
    for d in range(p["ndir"]):
        fa, ga = acts[d]
        w, r = p["w"][d], p["r"][d]
        wb = rb = None
        if p["b"] is not None:
            wb, rb = p["b"][d, :3 * hid], p["b"][d, 3 * hid:]
        x2 = p["x"].reshape(seq * batch, -1)
        xw = fixed.accumulate(_DENSE, node, x2, np.ascontiguousarray(w.T), wb, fx, fw, fb, A, in_range=True)
        idx = _order(lens, seq, batch, p["reverse"][d])
        xw = _gather(xw.reshape(seq, batch, 3 * hid), idx)
        z_frac = fa.out_frac(zr_frac)
        if lbr:
            rt = np.ascontiguousarray(r.T)
            hpre_frac = A.frac_bits if A is not None else _auto_frac(x_frac, fbf, z_frac + max(h_frac, fbf))
        else:
            rzr_t, rh_t = np.ascontiguousarray(r[:2 * hid].T), np.ascontiguousarray(r[2 * hid:].T)
            rb_zr, rb_h = (rb[:2 * hid], rb[2 * hid:]) if rb is not None else (None, None)
            hpre_frac = zr_frac
        hh_frac = ga.out_frac(hpre_frac)
        h = h0[d]
        y = np.zeros((seq, batch, hid))
        for t in range(seq):
            if lbr:  # hls4ml's gru_static (Keras reset_after=True)
                hr = fixed.accumulate(_DENSE, node, h, rt, rb, S, fr, fb, A, in_range=True)
                zr = fa(cast_acc(xw[t, :, :2 * hid] + hr[:, :2 * hid]), zr_frac)
                z, rg = zr[:, :hid], zr[:, hid:]
                hr_h = hr[:, 2 * hid:]
                _exact(node, [(rg, z_frac, hr_h, zr_frac)], "products r * (h R_h + Rb_h)")
                pre_h = cast_acc(xw[t, :, 2 * hid:] + cast_acc(rg * hr_h))
            else:    # the reset gate before the product: (state_t)(r * h), then its own dense
                hr = fixed.accumulate(_DENSE, node, h, rzr_t, rb_zr, S, fr, fb, A, in_range=True)
                zr = fa(cast_acc(xw[t, :, :2 * hid] + hr), zr_frac)
                z, rg = zr[:, :hid], zr[:, hid:]
                _exact(node, [(rg, z_frac, h, _frac(S))], "products r * h")
                rh = _cast_state(ctx, node, rg * h, S, result=False)
                pre_h = cast_acc(xw[t, :, 2 * hid:]
                                 + fixed.accumulate(_DENSE, node, rh, rh_t, rb_h, S, fr, fb, A, in_range=True))
            hh = ga(pre_h, hpre_frac)
            one_z = 1.0 - z
            _exact(node, [(hh, hh_frac, one_z, max(z_frac, 0)), (h, _frac(S), z, z_frac)],
                   "state updates hh*(1-z) + h*z")
            h_new = _cast_state(ctx, node, hh * one_z + h * z, S)
            if lens is not None:
                valid = (t < lens)[:, None]
                h = np.where(valid, h_new, h)
                y[t] = np.where(valid, h_new, 0.0)
            else:
                h = h_new
                y[t] = h_new
        if lens is not None and not lens.all():
            h = np.where((lens > 0)[:, None], h, 0.0)
        ys.append(_scatter(y, idx))
        hs.append(h)
    return _fixed_outputs(node, p, ctx, prec.result, [(ys, S), (hs, S)])


def _cast_state(ctx: Any, node: Any, values: np.ndarray, fmt: Any, result: bool = True) -> np.ndarray:
    """A state cast (h, c; r*h with result=False), counted as such by an observing run."""
    cast_state = getattr(ctx, "cast_state", None)
    if cast_state is not None:
        return cast_state(node, values, fmt, result)
    return ctx.cast(node, values, fmt) if result else fmt.quantize(values)


def _fixed_outputs(node: Any, p: dict, ctx: Any, R: Any, parts: list) -> tuple:
    """Y, Y_h (, Y_c) laid out as the float kernel does, assigned to `result` (res_T) where their
    state/cell format differs from it (hls4ml: res[i] = h_newstate[j])."""
    outs = _finish(p, *[vals for vals, _ in parts[:2]], parts[2][0] if len(parts) > 2 else None)
    res, res_fmts = [], []
    for value, (_, fmt) in zip(outs, parts):
        if fmt != R:
            value = ctx.cast(node, value, R)
        res.append(value + 0.0)
        res_fmts.append(R)
    return tuple(res), tuple(res_fmts)


register(OpDef(
    "LSTM",
    infer=lambda node, ins: _infer(node, ins, 4, 3),
    run=_lstm_run,
    prepare=_lstm_prepare,
    macs=lambda node, ins, outs: _macs(node, ins, 4),
    check=lambda node: _check(node, 4, ("Sigmoid", "Tanh", "Tanh")),
    param_slots=(1, 2, 3, 7),
    bias_slots=(3,),
    run_fixed=_lstm_fixed,
))

register(OpDef(
    "GRU",
    infer=lambda node, ins: _infer(node, ins, 3, 2),
    run=_gru_run,
    macs=lambda node, ins, outs: _macs(node, ins, 3),
    check=lambda node: _check(node, 3, ("Sigmoid", "Tanh")),
    param_slots=(1, 2, 3),
    bias_slots=(3,),
    run_fixed=_gru_fixed,
))
