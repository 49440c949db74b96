"""Model size and inference speed, measured side by side in one run on the same hardware.

Tang et al. 2019 (Table 2) time a whole pass over the SST-2 training set at batch 512; :func:`size_speed`
does the same for any set of models and reports parameters, seconds and the ratios to a reference model.
"""
from __future__ import annotations

import time

import torch

from .data import Encoded
from .errors import KDLibError
from .models import count_parameters
from .train import make_loader


@torch.no_grad()
def inference_seconds(model, enc: Encoded, batch_size: int = 512, device: str = "cpu", warmup: int = 2,
                      pad_id: int = 0) -> float:
    """Wall time of one eval-mode forward pass over every example of ``enc`` (after ``warmup`` batches)."""
    model.eval().to(device)
    loader = make_loader(enc, batch_size, False, pad_id=pad_id)
    batches = [{k: v.to(device) for k, v in b.items() if k not in ("idx", "labels")} for b in loader]
    for b in batches[:warmup]:
        model(**b)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in batches:
        model(**b)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def size_speed(models: dict, encodings: dict, reference: str, batch_size: int = 512, device: str = "cpu") -> list:
    """Rows of ``{model, params, seconds, params ÷, speed-up}`` relative to ``reference``.

    ``encodings`` maps each model name to its encoded data (models may use different tokenizers)."""
    rows = []
    for name, model in models.items():
        rows.append({"model": name, "params": count_parameters(model),
                     "seconds": inference_seconds(model, encodings[name], batch_size, device)})
    ref = next(r for r in rows if r["model"] == reference)
    for r in rows:
        r["fewer params ×"] = ref["params"] / r["params"]
        r["faster ×"] = ref["seconds"] / r["seconds"]
    return rows


def embedding_parameters(model) -> int:
    """Entries of the model's input word-embedding table (a BERT's or the BiLSTM's)."""
    table = model.embed if hasattr(model, "embed") else model.get_input_embeddings()
    return table.weight.numel()
