"""Where a distillation loss gets the teacher's side from: a cache on disk, or the teacher run live.

An objective declares the teacher quantities it reads, by name (:data:`QUANTITIES`). What is small per
example — the logits, the [CLS] vector of every layer — is computed once, in eval mode without gradients,
and cached on disk; the rest — every token's hidden state of every layer, the attention scores — would
take tens of GiB for SST-2, so the frozen teacher runs *in the loop* instead (eval mode, no gradients to
its weights, bf16 autocast on a GPU). Both arrive in the batch under the same keys,
``batch["teacher_<name>"]``, so a loss cannot tell them apart (a test checks that it gives the same value).

A cache is keyed by the *weights* that made it (a fingerprint written beside them) as well as by the data,
so it never outlives the teacher it came from. Making a cache takes a lock: a second process waits, then
reads it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .errors import KDLibError
from .models import QUANTITIES, check_quantities, forward_quantities  # noqa: F401 (the names live with the model)
from .store import atomic_torch_save, cache_dir, locked

CACHEABLE = ("logits", "cls")
FINGERPRINT = "weights.sha256"


class CachedTeacher:
    """Per-example teacher quantities looked up from tensors with one row per training example."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    @property
    def names(self) -> tuple:
        return tuple(self.tensors)

    def fill(self, batch: dict, idx: torch.Tensor, device) -> None:
        for name, t in self.tensors.items():
            batch[f"teacher_{name}"] = t[idx.cpu()].to(device).float()


class LiveTeacher:
    """The frozen teacher, run in the loop on the student's batch (eval mode, no grad, autocast on GPU)."""

    def __init__(self, model, names):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.names = check_quantities(names)
        self.seconds, self.calls = 0.0, 0  # time in the teacher's forward passes (what the live teacher costs)

    def to(self, device):
        self.model.to(device)
        return self

    def outputs(self, inputs: dict, names=None, grad_to_inputs: bool = False) -> dict:
        """The quantities for ``inputs`` (``input_ids`` or ``inputs_embeds``). ``grad_to_inputs`` keeps the
        graph so that gradients reach the *inputs* (a generator's soft tokens), never the teacher's weights."""
        import time

        from .train import autocast

        device = next(self.model.parameters()).device
        start = time.perf_counter()
        with torch.set_grad_enabled(grad_to_inputs), autocast(device.type):
            out = forward_quantities(self.model, inputs, names or self.names)
        if device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def fill(self, batch: dict, idx: torch.Tensor, device) -> None:
        if not self.names:  # held for a step that runs the teacher on inputs of its own making
            return
        inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in batch}
        for name, t in self.outputs(inputs).items():
            batch[f"teacher_{name}"] = t


class TeacherSource:
    """The cached part and the live part together; ``fill`` puts every declared quantity into a batch."""

    def __init__(self, cached: CachedTeacher | None = None, live: LiveTeacher | None = None):
        self.cached, self.live = cached, live

    def fill(self, batch: dict, idx: torch.Tensor, device) -> None:
        for part in (self.cached, self.live):
            if part is not None:
                part.fill(batch, idx, device)

    def to(self, device):
        if self.live is not None:
            self.live.to(device)
        return self


def split_quantities(names) -> tuple:
    """``(cached, live)``: the declared quantities the runner caches, and those the teacher computes live."""
    names = check_quantities(names)
    return tuple(n for n in names if n in CACHEABLE), tuple(n for n in names if n not in CACHEABLE)


# ---------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------
def fingerprint(weights_dir: Path) -> str:
    """The fingerprint of saved weights (written beside them when they are saved)."""
    path = Path(weights_dir) / FINGERPRINT
    if path.is_file():
        return path.read_text().strip()
    return write_fingerprint(weights_dir)


def write_fingerprint(weights_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(weights_dir).glob("*.safetensors")):
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()[:16]
    (Path(weights_dir) / FINGERPRINT).write_text(digest + "\n")
    return digest


def cached_outputs(model_fn, weights_dir: Path, key_parts: dict, loader_fn, names) -> dict:
    """The teacher's cacheable ``names`` for every example, from the cache or computed (under a lock).

    ``key_parts`` says what data they are for; the weights' fingerprint is added. ``model_fn()`` loads the
    teacher and ``loader_fn()`` gives the data loader, both only when the cache must be made."""
    from .train import predict

    names = check_quantities(names)
    if any(n not in CACHEABLE for n in names):
        raise KDLibError(f"only {', '.join(CACHEABLE)} are cached; the rest run live")
    key_src = {**key_parts, "weights": fingerprint(weights_dir), "outputs": list(names)}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True, default=list).encode()).hexdigest()[:16]
    path = cache_dir() / "teacher_outputs" / f"{key}.pt"
    with locked(path, "the teacher's outputs"):
        if path.is_file():
            return torch.load(path)
        model = model_fn()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        got = predict(model, loader_fn(), device=device, quantities=names)
        logits, extra = got if isinstance(got, tuple) else (got, {})
        out = {"logits": logits, **{k: v.half() for k, v in extra.items()}}
        out = {k: out[k] for k in names}
        atomic_torch_save(out, path)
    return out
