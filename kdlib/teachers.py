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
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import KDLibError, choices
from .store import atomic_torch_save, cache_dir, locked

#: name → what it is (shapes per example; L = teacher layers, T = tokens, H = width, A = heads)
QUANTITIES = {
    "logits": "the prediction layer's output (labels,)",
    "cls": "the [CLS] vector of the embeddings and of every layer (L + 1, H)",
    "embeddings": "the embedding layer's output for every token (T, H)",
    "hidden": "every token's vector at the embeddings and every layer (L + 1, T, H)",
    "attention_scores": "every layer's pre-softmax attention scores Q·Kᵀ/√d (L, A, T, T)",
}
CACHEABLE = ("logits", "cls")
FINGERPRINT = "weights.sha256"


def check_quantities(names) -> tuple:
    names = tuple(sorted(set(names)))
    unknown = [n for n in names if n not in QUANTITIES]
    if unknown:
        raise KDLibError(f"unknown teacher quantity {unknown[0]!r}; valid choices: {choices(QUANTITIES)}")
    return names


# ---------------------------------------------------------------------------------------------------
# Computing quantities from a model
# ---------------------------------------------------------------------------------------------------
@contextmanager
def capture_attention_scores(model):
    """Collects every BERT self-attention layer's pre-softmax scores ``Q·Kᵀ/√d`` (batch, heads, T, T) while
    the model runs, from hooks on its query and key projections: works under eager and sdpa attention."""
    layers = [m for m in model.modules() if hasattr(m, "query") and hasattr(m, "key")
              and hasattr(m, "attention_head_size")]
    scores, handles = [], []
    for layer in layers:
        seen = {}

        def grab(name, seen=seen, layer=layer):
            def hook(mod, inp, out):
                seen[name] = out
                if len(seen) == 2:
                    b, t, _ = out.shape
                    shape = (b, t, -1, layer.attention_head_size)
                    q = seen.pop("q").view(shape).transpose(1, 2)
                    k = seen.pop("k").view(shape).transpose(1, 2)
                    scores.append(q @ k.transpose(-1, -2) * layer.attention_head_size ** -0.5)
            return hook

        handles.append(layer.query.register_forward_hook(grab("q")))
        handles.append(layer.key.register_forward_hook(grab("k")))
    try:
        yield scores
    finally:
        for h in handles:
            h.remove()


def forward_quantities(model, inputs: dict, names) -> dict:
    """Run ``model`` on ``inputs`` and return the named quantities (float tensors, batch first)."""
    names = check_quantities(names)
    need_states = any(n in names for n in ("cls", "hidden", "embeddings"))
    kwargs = {**inputs, **({"output_hidden_states": True} if need_states else {})}
    if "attention_scores" in names:
        with capture_attention_scores(model) as scores:
            out = model(**kwargs)
    else:
        out, scores = model(**kwargs), None
    got = {}
    if "logits" in names:
        got["logits"] = out.logits.float()
    if need_states:
        states = getattr(out, "hidden_states", None)
        if states is None:
            raise KDLibError(f"the teacher returned no hidden states ({type(out).__name__})")
        if "cls" in names:
            got["cls"] = torch.stack([h[:, 0] for h in states], 1).float()
        if "hidden" in names:
            got["hidden"] = torch.stack(states, 1).float()
        if "embeddings" in names:
            got["embeddings"] = states[0].float()
    if scores is not None:
        if not scores:
            raise KDLibError("the teacher has no BERT self-attention layers to read attention scores from")
        got["attention_scores"] = torch.stack(scores, 1).float()
    return got


# ---------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------
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

    def to(self, device):
        self.model.to(device)
        return self

    def outputs(self, inputs: dict, names=None, grad_to_inputs: bool = False) -> dict:
        """The quantities for ``inputs`` (``input_ids`` or ``inputs_embeds``). ``grad_to_inputs`` keeps the
        graph so that gradients reach the *inputs* (a generator's soft tokens), never the teacher's weights."""
        device = next(self.model.parameters()).device
        with torch.set_grad_enabled(grad_to_inputs), \
                torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return forward_quantities(self.model, inputs, names or self.names)

    def fill(self, batch: dict, idx: torch.Tensor, device) -> None:
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
