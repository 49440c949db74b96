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


def measure(chapter: str, models: dict, reference: str, batch_size: int = 512, device: str = "cpu",
            force: bool = False, stored_only: bool = False) -> dict | None:
    """A stored size/speed record for ``models`` (name → :class:`~kdlib.config.Experiment` whose
    architecture is timed) over the whole training set of their task, at ``batch_size`` on ``device``.

    Stored at ``results/<profile>/<chapter>/measurements/size_speed-<hash>.json`` with the same provenance as a
    training record, and loaded from there when present (unless ``force`` or ``KDLIB_RECOMPUTE``). Weights do
    not change the time, so each model is built as its experiment would start (no training needed).
    ``stored_only`` returns the stored record or ``None``, never measuring."""
    from .data import encode, get_task
    from .errors import check_choice
    from .runner import build_model, split_data
    from .store import measurement
    from .models import load_tokenizer, quiet_transformers

    check_choice("device", device, ("cpu", "cuda"))
    check_choice("reference model", reference, models)
    exps = list(models.values())
    first = exps[0]
    config = {"task": first.task, "data": first.data, "train_size": first.train_size, "batch_size": batch_size,
              "device": device, "reference": reference,
              "models": {name: {"model": e.model.hash_dict(), "max_length": e.max_length} for name, e in models.items()}}

    def compute() -> dict:
        if device == "cuda" and not torch.cuda.is_available():
            raise KDLibError("no CUDA device here to time on; valid choices: cpu")
        quiet_transformers()
        spec = get_task(first.task)
        built, encodings = {}, {}
        for name, exp in models.items():
            tok = load_tokenizer(exp.model.checkpoint)
            built[name] = build_model(exp, spec.num_labels, tok)
            encodings[name] = encode(tok, split_data(exp.replace(augment=None), "train"), exp.max_length)
        rows = size_speed(built, encodings, reference, batch_size, device)
        for r in rows:
            r["params w/o embeddings"] = r["params"] - embedding_parameters(built[r["model"]])
        return {"rows": rows, "n_examples": len(next(iter(encodings.values())))}

    return measurement("size_speed", first.profile, chapter, config, compute, force, stored_only)
