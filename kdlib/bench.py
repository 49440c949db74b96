"""``kdbook bench``: kdlib's loop against the common ``transformers.Trainer`` recipe for KD, side by side in one run.

Every side trains the same student (a copy of the checkpoint's first layers) by Hinton KD (``losses.hinton_kd``,
the same function on every side) with the same optimiser (fused AdamW, linear warm-up and decay, clipping at 1),
batch and examples, for one epoch, without dev evaluation:

* ``trainer, padded``: a ``Trainer`` subclass that runs the teacher on every batch, every row padded to the
  maximum length (the recipe most KD tutorials give);
* ``trainer, dynamic``: the same, each batch padded to its longest row;
* ``trainer, grouped``: the same, batches of similar length (``train_sampling_strategy="group_by_length"``);
* ``kdlib``: the teacher's logits made once for the training set (timed, and counted), then :func:`kdlib.train.train`
  with length-bucketed batches.

Two workloads: **one run** (each side's examples per second; kdlib's with and without its cache), and **the
book's workload**, ``runs`` students sharing one teacher (``seeds`` seeds × two KD settings), where kdlib makes its
cache once and the Trainer runs the teacher on every batch of every run. Sides are interleaved over ``rounds``
(their order rotated) so that a slow spell of a shared machine falls on all of them; the record keeps every
round's seconds and the medians. The same command runs on a GPU (bf16 autocast there, as the book's loop).
"""
from __future__ import annotations

import statistics
import tempfile
import time

import torch

from .errors import KDLibError

SIDES = ("trainer, padded", "trainer, dynamic", "trainer, grouped", "kdlib")
#: the two KD settings of the workload (the book's KD row, and a softer one)
SETTINGS = ({"T": 2.0, "alpha": 0.5}, {"T": 4.0, "alpha": 0.9})


def _data(task: str, n: int, seed: int = 0):
    """``n`` training examples of ``task``: the local GLUE copy where there is one, else synthetic ones."""
    from .data import load_task, synthetic_task

    try:
        return load_task(task, "train").subset(n, seed), "glue"
    except (KDLibError, OSError):  # no local copy, and no hub (a ConnectionError is an OSError)
        return synthetic_task(task, "train", n, seed), "synthetic"


def _teacher_and_student(checkpoint: str, layers: tuple, num_labels: int):
    """The teacher (the checkpoint with a head drawn under seed 0: its weights do not change the time) and a
    fresh student copy of its first ``layers``."""
    from .models import load_classifier, student_from_teacher

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = load_classifier(checkpoint, num_labels).eval()
    return teacher, student_from_teacher(checkpoint, layers, num_labels)


class _KDTrainer:
    """Made on first use: a ``transformers.Trainer`` whose loss runs the teacher on the batch."""

    cls = None

    @classmethod
    def get(cls):
        if cls.cls is None:
            from transformers import Trainer

            from .losses import hinton_kd

            class KDTrainer(Trainer):
                def __init__(self, *a, teacher=None, T=2.0, alpha=0.5, **kw):
                    super().__init__(*a, **kw)
                    self.teacher, self.T, self.alpha = teacher.to(self.args.device), T, alpha

                def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                    labels = inputs.pop("labels")
                    with torch.no_grad():
                        teacher_logits = self.teacher(**inputs).logits
                    out = model(**inputs)
                    loss = hinton_kd(out.logits, teacher_logits, labels, self.T, self.alpha)
                    return (loss, out) if return_outputs else loss

            cls.cls = KDTrainer
        return cls.cls


def trainer_run(side: str, enc, tokenizer, teacher, student, setting: dict, batch_size: int, max_length: int,
                lr: float, seed: int) -> float:
    """One epoch of the Trainer recipe ``side`` on ``enc``; returns the seconds of ``trainer.train()``."""
    from transformers import DataCollatorWithPadding, TrainingArguments

    rows = [{"input_ids": enc.input_ids[i], "token_type_ids": enc.token_type_ids[i],
             "attention_mask": [1] * len(enc.input_ids[i]), "labels": int(enc.labels[i])} for i in range(len(enc))]
    padded = side == "trainer, padded"
    collator = DataCollatorWithPadding(tokenizer, padding="max_length" if padded else True,
                                       max_length=max_length if padded else None)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=lr,
            weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,  # 0.1: a ratio
            optim="adamw_torch_fused", seed=seed, save_strategy="no", eval_strategy="no", report_to=[],
            logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
            bf16=torch.cuda.is_available(),
            train_sampling_strategy="group_by_length" if side == "trainer, grouped" else "random")
        trainer = _KDTrainer.get()(model=student, args=args, train_dataset=rows, data_collator=collator,
                                   teacher=teacher, **setting)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # its summary line per run, nothing timed
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def kdlib_cache(teacher, enc, pad_id: int) -> tuple:
    """The teacher's logits for every example, as the book caches them; returns ``(logits, seconds)``."""
    from .train import make_loader, predict

    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher.to(device)
    start = time.perf_counter()
    logits = predict(teacher, make_loader(enc, 256, False, pad_id=pad_id), device=device)
    return logits, time.perf_counter() - start


def kdlib_run(task: str, enc, student, logits, setting: dict, batch_size: int, lr: float, seed: int,
              pad_id: int) -> float:
    """One epoch of kdlib's loop on ``enc`` with cached teacher logits; returns its seconds."""
    from .methods import make_objective
    from .steps import OptimArgs
    from .teachers import CachedTeacher, TeacherSource
    from .train import TrainArgs, train

    step = make_objective("kd", dict(setting)).make_step(student, OptimArgs(lr=lr))
    source = TeacherSource(CachedTeacher({"logits": logits}), None)
    start = time.perf_counter()
    train(step, enc, None, task, TrainArgs(epochs=1, batch_size=batch_size, evals_per_epoch=0, keep="last", seed=seed),
          teacher=source, pad_id=pad_id, progress=False)
    return time.perf_counter() - start


def check(**settings) -> None:
    """One clear line for a bad setting of :func:`bench` (before anything is made or written)."""
    from .data import get_task

    for name in ("examples", "rounds", "seeds", "batch_size"):
        v = settings.get(name, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise KDLibError(f"{name} must be an integer >= 1, got {v!r}")
    unknown = [s for s in settings.get("sides", ()) if s not in SIDES]
    if unknown:
        raise KDLibError(f"unknown side {unknown[0]!r}; valid choices: {', '.join(SIDES)}")
    task = settings.get("task", "sst2")
    spec = get_task(task)
    if spec.is_regression or spec.unlabelled:
        raise KDLibError(f"the bench trains a classifier; task {task!r} is not one; valid choices: sst2, cola, mrpc, "
                         "rte, qnli, wnli")


def bench(examples: int = 1500, rounds: int = 3, seeds: int = 3, task: str = "sst2", checkpoint: str = "minilm-l6",
          layers: tuple = (0, 1), batch_size: int = 32, max_length: int = 128, lr: float = 1e-4,
          sides: tuple = SIDES, progress: bool = False) -> dict:
    """The measurements of the module's docstring: ``{"rounds": [...], "summary": {...}}`` (seconds per round and
    side; medians of examples per second and their ratios)."""
    from tqdm import tqdm

    from .data import encode, get_task
    from .models import load_tokenizer, quiet_transformers

    check(examples=examples, rounds=rounds, seeds=seeds, batch_size=batch_size, sides=sides, task=task)
    spec = get_task(task)
    quiet_transformers()
    tok = load_tokenizer(checkpoint)
    data, source = _data(task, examples)
    enc = encode(tok, data, max_length)
    pad = tok.pad_token_id or 0
    runs = [(s, setting) for setting in SETTINGS for s in range(seeds)]
    out = []
    bar = tqdm(total=rounds * len(sides), desc="bench", disable=not progress)
    for r in range(rounds):
        order = list(sides[r % len(sides):]) + list(sides[:r % len(sides)])  # rotated: no side always first
        times = {}
        for side in order:
            teacher, _ = _teacher_and_student(checkpoint, layers, spec.num_labels)
            if side == "kdlib":
                logits, cache_s = kdlib_cache(teacher, enc, pad)
                one = [kdlib_run(task, enc, _teacher_and_student(checkpoint, layers, spec.num_labels)[1], logits, st,
                                 batch_size, lr, s, pad) for s, st in runs]
                times[side] = {"cache": cache_s, "runs": one}
            else:
                one = [trainer_run(side, enc, tok, teacher, _teacher_and_student(checkpoint, layers, spec.num_labels)[1],
                                   st, batch_size, max_length, lr, s) for s, st in (runs if side == "trainer, grouped"
                                                                                     else runs[:1])]
                times[side] = {"runs": one}
            bar.update(1)
        out.append(times)
    bar.close()
    return {"data": source, "examples": len(enc), "workload_runs": len(runs), "rounds": out,
            "summary": summarize(out, len(enc), len(runs))}


def summarize(rounds: list, n: int, workload: int) -> dict:
    """Medians over rounds: each side's examples per second on one run (kdlib's with and without its cache), the
    book's workload's for the grouped Trainer and kdlib (``workload`` runs, kdlib's cache made once), and the
    ratios to the padded recipe and to the grouped Trainer."""
    def med(f):
        vals = [f(r) for r in rounds]
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}

    s = {}
    for side in rounds[0]:
        s[f"{side}: one run"] = med(lambda r, side=side: n / r[side]["runs"][0])
    if "kdlib" in rounds[0]:
        s["kdlib: one run with its cache"] = med(lambda r: n / (r["kdlib"]["runs"][0] + r["kdlib"]["cache"]))
        s["kdlib: workload, cache included"] = med(lambda r: workload * n / (sum(r["kdlib"]["runs"]) +
                                                                            r["kdlib"]["cache"]))
    if "trainer, grouped" in rounds[0]:
        s["trainer, grouped: workload"] = med(lambda r: workload * n / sum(r["trainer, grouped"]["runs"]))
    ratios = {}
    if "kdlib" in rounds[0] and "trainer, grouped" in rounds[0]:
        ratios["kdlib / trainer, grouped: workload"] = med(
            lambda r: sum(r["trainer, grouped"]["runs"]) / (sum(r["kdlib"]["runs"]) + r["kdlib"]["cache"]))
        ratios["kdlib / trainer, grouped: one run with its cache"] = med(
            lambda r: r["trainer, grouped"]["runs"][0] / (r["kdlib"]["runs"][0] + r["kdlib"]["cache"]))
    if "kdlib" in rounds[0] and "trainer, padded" in rounds[0]:
        ratios["kdlib / trainer, padded: one run"] = med(lambda r: r["trainer, padded"]["runs"][0] /
                                                        r["kdlib"]["runs"][0])
    return {"examples_per_s": s, "ratios": ratios}


def stored_bench(force: bool = False, stored_only: bool = False, **kw) -> dict | None:
    """The bench as a stored measurement (``results/<cpu|gpu>/cost/measurements/bench-<hash>.json``, with the
    usual provenance), keyed by its settings and the device; made by :func:`bench` unless stored."""
    import inspect

    from .store import measurement

    check(**kw)
    settings = {k: v.default for k, v in inspect.signature(bench).parameters.items() if k != "progress"}
    settings.update({k: v for k, v in kw.items() if k != "progress"})
    settings["layers"], settings["sides"] = list(settings["layers"]), list(settings["sides"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return measurement("bench", "gpu" if device == "cuda" else "cpu", "cost", {**settings, "device": device},
                       lambda: bench(**kw), force=force, stored_only=stored_only)
