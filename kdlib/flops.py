"""Counting a run's work: the floating-point operations and the operator calls of its training steps.

What the gpu profile would cost on a GPU is estimated from these counts (:func:`kdlib.dryrun.estimate`): they
do not depend on the machine that counts them, so a CPU measures them for an H100. ``KDLIB_COUNT_FLOPS=1`` turns
counting on (a gpu dry run sets it); a run then tallies, for each part of its work (``train``: a step, the live
teacher's forward passes included; ``eval``: the dev predictions), the FLOPs, the operator calls and the tokens,
and stores the tally in its record's ``work`` field. Off, nothing is counted and nothing slows.

FLOPs are PyTorch's own count (:class:`torch.utils.flop_counter.FlopCounterMode`: matrix products and
attention) plus the LSTM layers it does not count (the BiLSTM student); element-wise work is not counted.
Operator calls are every ATen call the dispatcher sees, a proxy for the kernels an eager GPU step launches.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

ENV = "KDLIB_COUNT_FLOPS"

#: the tallies of the runs being made in this process, innermost last (a teacher made inside a student's run
#: tallies its own work)
_tallies: list = []


def enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0", "false", "no")


@contextmanager
def run_tally():
    """A fresh tally for the run made inside: ``{part: {"flops", "ops", "tokens", "calls"}}``, empty when
    counting is off."""
    tally: dict = {}
    _tallies.append(tally)
    try:
        yield tally
    finally:
        _tallies.pop()


def _lstm_flops(input_shape, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """One direction of one LSTM layer: a (4H × (I + H)) matrix product per token, 2 FLOPs a multiply-add."""
    tokens = 1
    for d in input_shape[:-1]:
        tokens *= d
    return 2 * tokens * (w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1])


def _lstm_backward_flops(input_shape, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    return 2 * _lstm_flops(input_shape, w_ih, w_hh)  # the gradients of the input and of the weights


def _custom_mapping() -> dict:
    import torch

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "mkldnn_rnn_layer"):  # a CPU's LSTM layer
        mapping[aten.mkldnn_rnn_layer] = _lstm_flops
        mapping[aten.mkldnn_rnn_layer_backward] = _lstm_backward_flops
    return mapping


@contextmanager
def counting(part: str, tokens: int):
    """Count the work done inside into the current run's tally under ``part``, with ``tokens`` the tokens it
    processed; a no-op when counting is off or no run is being made."""
    if not enabled() or not _tallies:
        yield
        return
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    calls = [0]

    class _Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls[0] += 1
            return func(*args, **(kwargs or {}))

    with FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter, _Ops():
        yield
    t = _tallies[-1].setdefault(part, {"flops": 0, "ops": 0, "tokens": 0, "calls": 0})
    t["flops"] += int(counter.get_total_flops())
    t["ops"] += calls[0]
    t["tokens"] += int(tokens)
    t["calls"] += 1


def tokens_of(batch: dict) -> int:
    """The token positions of a batch as padded (rows × its longest row): what its matrix products run over."""
    ids = batch.get("input_ids")
    return 0 if ids is None else int(ids.numel())
