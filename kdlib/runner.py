"""From a config to a record: build what the run needs, train, store.

:func:`run` returns an experiment's result record: loaded when stored (from any chapter's folder), else
made — its data, its teacher (made first if need be, nested), its model (every weight drawn under the
run's seed), its objective and training step — trained, and written atomically with its provenance.

* ``force=True`` trains again; ``KDLIB_RECOMPUTE=1`` trains every run again *once per command*: a teacher
  that three students share is re-trained once, and the students read its new outputs (a teacher-output
  cache is keyed by the weights that made it).
* Making a run takes a lock on its hash: a second process that needs the same run (a shared teacher)
  waits, then reads the record and weights the first one wrote.
* A run whose weights another run needs (a teacher; the start of a :class:`~kdlib.config.FromRun`) keeps
  them in the cache folder, with a fingerprint that keys the caches made from them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from . import flops
from .config import BiLSTM, Experiment, FreshBert, FromRun, LayerCopy, MaskedLM, Pretrained, seed_for
from .data import TaskData, encode, get_task, load_task, synthetic_task
from .errors import KDLibError
from .losses import UNLABELLED
from .methods import make_objective
from .metrics import agreement
from .models import count_parameters, fresh_student, load_classifier, load_tokenizer, masked_lm, quiet_transformers, \
    resolve_checkpoint, student_from_teacher
from .steps import OptimArgs
from .store import (RECORD_FIELDS, atomic_write_text, cache_dir, check_writable, load_record, locked, measurement,
                    provenance, recompute_requested, record_path, results_dir, stored_path)
from .teachers import CachedTeacher, LiveTeacher, TeacherSource, cached_outputs, fingerprint, split_quantities, \
    write_fingerprint
from .train import TrainArgs, make_loader, progress_enabled, train

#: hashes trained again in this process under KDLIB_RECOMPUTE: each run is re-made once per command
_recomputed: set = set()


def model_dir(exp: Experiment) -> Path:
    return cache_dir() / "models" / exp.hash


def has_weights(exp: Experiment) -> bool:
    """Whether ``exp``'s kept weights are in the cache folder."""
    return (model_dir(exp) / "kdlib.json").is_file()


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
def split_data(exp: Experiment, split: str) -> TaskData:
    size = exp.train_size if split == "train" else exp.dev_size
    if exp.data == "synthetic":
        if size is None:
            raise KDLibError(f"synthetic data needs a {split} size")
        return synthetic_task(exp.task, split, size, seed=exp.subset_seed)
    data = load_task(exp.task, split)
    return data.subset(size, exp.subset_seed) if split == "train" else data


def augmented(exp: Experiment, data: TaskData, progress: bool = False) -> TaskData:
    """The augmentations of ``data`` (new examples only) that ``exp.augment`` names, cached on disk."""
    key_src = {"task": data.task, "data": exp.data, "size": exp.train_size, "n": len(data),
               "subset_seed": exp.subset_seed, "augment": exp.augment.making_dict()}
    for name, run in exp.augment.runs().items():  # keyed by the weights the augmenter reads, not only their config
        key_src[f"{name}_weights"] = fingerprint(trained_weights(run))
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "augmented" / f"{key}.json"
    with locked(path, "the augmented transfer set"):
        if path.is_file():
            return TaskData(**json.loads(path.read_text()))
        made = {}

        def compute() -> dict:  # the transfer set goes to the cache; its cost, size and digest to a stored record
            augmenter = exp.augment.make(seed=exp.subset_seed)
            made["data"] = augmenter.augment(data, progress=progress, **augmenter_arguments(exp.augment))
            made["text"] = json.dumps(dataclasses.asdict(made["data"]))
            return {"n_source": len(data), "n_new": len(made["data"]),
                    "sha256": hashlib.sha256(made["text"].encode()).hexdigest()}

        # made again on a machine without the cache: the stored record stays if the transfer set is the same
        measurement("augmentation", exp.profile, exp.chapter, key_src, compute, force=True, same=("sha256",))
        extra = made["data"]
        atomic_write_text(path, made["text"])
    return extra


def augmenter_arguments(augment) -> dict:
    """What the augmenter of config ``augment`` reads besides the data: the trained runs the config names
    (made first if need be), loaded as ``(model, tokenizer)`` and turned into arguments by the config."""
    loaded = {}
    for name, run in augment.runs().items():
        with torch.random.fork_rng(devices=[]):
            loaded[name] = (load_run_weights(run), load_tokenizer(run.model.checkpoint))
    return augment.arguments(loaded)


def unlabelled(data: TaskData) -> TaskData:
    """``data`` with no labels (:data:`kdlib.losses.UNLABELLED`): the loss's hard-label terms skip it."""
    none = float("nan") if get_task(data.task).is_regression else UNLABELLED
    return dataclasses.replace(data, labels=[none] * len(data))


def concat(a: TaskData, b: TaskData) -> TaskData:
    both = None if a.text_b is None else a.text_b + b.text_b
    return TaskData(a.task, f"{a.split}+{b.split}", a.text_a + b.text_a, both, a.labels + b.labels, a.source)


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------
def build_model(exp: Experiment, num_labels: int, tokenizer=None):
    """The network ``exp`` starts from. Every weight not copied from a checkpoint or a run is drawn under
    the run's seed, whatever ran before in this process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(exp.seed, "init"))
        return _build(exp.model, exp, num_labels, tokenizer)


def _build(spec, exp: Experiment, num_labels: int, tokenizer):
    if isinstance(spec, Pretrained):
        return load_classifier(spec.checkpoint, num_labels)
    if isinstance(spec, LayerCopy):
        return student_from_teacher(spec.checkpoint, spec.layers, num_labels)
    if isinstance(spec, FreshBert):
        tokenizer = tokenizer or load_tokenizer(spec.checkpoint)
        return fresh_student(len(tokenizer), num_labels, spec.layers, spec.hidden, spec.heads, spec.intermediate,
                             seed=None)  # drawn under the run's seed (set above)
    if isinstance(spec, BiLSTM):
        from .bilstm import BiLSTMClassifier

        tokenizer = tokenizer or load_tokenizer(spec.checkpoint)
        table = None
        if spec.embeddings != "random":
            with torch.random.fork_rng(devices=[]):  # the throw-away head of this load draws nothing of ours
                table = load_classifier(spec.checkpoint, num_labels).get_input_embeddings().weight.detach().clone()
        model = BiLSTMClassifier(len(tokenizer), num_labels, embed_dim=300 if table is None else table.size(1),
                                 hidden=spec.hidden, fc=spec.fc, pair=get_task(exp.task).is_pair,
                                 padding_idx=tokenizer.pad_token_id or 0, embeddings=table)
        model.embed.weight.requires_grad_(spec.embeddings != "static")
        return model
    if isinstance(spec, MaskedLM):
        return masked_lm(spec.checkpoint, spec.tune_layers)
    if isinstance(spec, FromRun):
        return load_run_weights(spec.run, num_labels)
    raise KDLibError(f"unknown model kind {type(spec).__name__}")  # pragma: no cover - config validates


def trained_weights(exp: Experiment, progress: bool | None = None) -> Path:
    """The folder holding ``exp``'s kept weights, training it first if they are not cached."""
    if not has_weights(exp) or (recompute_requested() and exp.hash not in _recomputed):
        run(exp, keep_model=True, progress=progress, _need_weights=True)
    return model_dir(exp)


def load_run_weights(exp: Experiment, num_labels: int | None = None):
    """``exp``'s architecture with its kept weights. A head for another label count is drawn fresh, from the
    caller's random state (a run that starts from this one draws it under its own seed)."""
    from safetensors.torch import load_file

    folder = trained_weights(exp)
    n = num_labels or get_task(exp.task).num_labels
    model = _build(exp.model, exp, n, None)
    state = load_file(str(folder / "model.safetensors"))
    own = model.state_dict()
    dropped = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if any("classifier" not in k for k in dropped):
        raise KDLibError(f"the weights of run {exp.hash} do not fit its architecture ({dropped[0]}); "
                         "delete them from the cache to have them made again")
    model.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=not dropped)
    return model


def save_weights(exp: Experiment, model, tokenizer) -> None:
    from safetensors.torch import save_file

    folder = model_dir(exp)
    folder.mkdir(parents=True, exist_ok=True)
    # copies: safetensors refuses tensors that share storage, as a masked LM's tied output layer and input-embedding
    # table do (each is written out; loading ties them again)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    if hasattr(model, "config"):
        model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_fingerprint(folder)
    atomic_write_text(folder / "kdlib.json", json.dumps({"hash": exp.hash, "config": exp.to_dict()}, indent=1))


def teacher_model(teacher: Experiment, progress: bool | None = None):
    """The trained teacher (made first if its weights are not cached), frozen, in eval mode."""
    quiet_transformers()
    trained_weights(teacher, progress)
    with torch.random.fork_rng(devices=[]):  # loading draws a throw-away head: no caller's draw moves
        model = load_run_weights(teacher)
    return model.eval()


def teacher_source(exp: Experiment, objective, train_data: TaskData, extra: TaskData | None,
                   progress: bool | None = None) -> tuple:
    """``(source, dev_cls)``: the teacher quantities the objective declares, cached where small, live
    otherwise; and the teacher's dev [CLS] states if the objective summarises them."""
    t = exp.teacher
    if isinstance(t, Pretrained):  # a checkpoint as it is: nothing to train, nothing cached, run live
        with torch.random.fork_rng(devices=[]):  # its throw-away head draws nothing of the caller's
            model = load_classifier(t.checkpoint, 2)
        return TeacherSource(None, LiveTeacher(model.eval(), objective.teacher_quantities)), None
    folder = trained_weights(t, progress)
    cached_names, live_names = split_quantities(objective.teacher_quantities)
    tok = load_tokenizer(t.model.checkpoint)

    def outputs(data: TaskData, names) -> dict:
        key = {"task": data.task, "split": data.split, "data": exp.data, "n": len(data), "size": exp.train_size,
               "subset_seed": exp.subset_seed, "max_length": exp.max_length,
               "augment": exp.augment.making_dict() if "+" in data.split and exp.augment else None}  # a transfer set
        return cached_outputs(lambda: teacher_model(t, progress), folder, key,
                              lambda: make_loader(encode(tok, data, exp.max_length), 256, False,
                                                  pad_id=tok.pad_token_id or 0), names)

    cached = None
    if cached_names:
        tensors = outputs(train_data, cached_names)
        if extra is not None:
            more = outputs(extra, cached_names)
            tensors = {k: torch.cat([tensors[k], more[k]]) for k in tensors}
        cached = CachedTeacher(tensors)
    live = LiveTeacher(teacher_model(t, progress), live_names) if live_names or objective.needs_live_teacher else None
    dev_cls = None
    if objective.summarizes_dev:
        dev_cls = outputs(split_data(exp, "dev"), ("cls",))["cls"]
    return TeacherSource(cached, live), dev_cls


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def run(exp: Experiment, force: bool = False, keep_model: bool = False, progress: bool | None = None,
        _need_weights: bool = False) -> dict:
    """The result record of ``exp``: loaded if stored, else computed, stored and returned."""
    keep_model = keep_model or exp.keep_model

    def stored():
        redo = force or (recompute_requested() and exp.hash not in _recomputed)
        path = None if redo else stored_path(exp)
        if path is None or (_need_weights and not has_weights(exp)):
            return None
        return load_record(path, RECORD_FIELDS)

    rec = stored()
    if rec is not None:
        return rec
    check_writable(results_dir(), "results")
    check_writable(cache_dir(), "cache")
    from contextlib import nullcontext

    from accelerate import PartialState

    # the processes of one `accelerate launch` train a run together: only separate commands take turns
    together = PartialState().num_processes > 1
    key = stack_of(exp)[0].hash if exp.stack else exp.hash  # a stack's seeds are made together, under one lock
    lock = nullcontext() if together else locked(cache_dir() / "runs" / f"{key}",
                                                 f"run {key} ({exp.label or exp.method})")
    with lock:
        rec = None if force else stored()  # made by another process while this one waited
        if rec is None:
            # only the weights are missing (a fresh machine): the run is made again for them, and its stored
            # record stays as it is if the new run reproduces it
            kept = (stored_path(exp) if _need_weights and not (force or recompute_requested() or exp.stack)
                    else None)
            kept_text = kept.read_text() if kept is not None else None
            if kept is not None:
                print(f"[kdlib] weights of {exp.label or exp.method} {exp.hash} not cached: training it again",
                      flush=True)
            if exp.stack:
                recs = _make_stack(stack_of(exp), keep_model, progress)
                rec = recs[exp.stack.index(exp.seed)]
            else:
                rec = _make(exp, keep_model, progress)
            if kept is not None:
                rec = _keep_if_reproduced(exp, kept, kept_text, rec)
            if recompute_requested():
                _recomputed.update(e.hash for e in (stack_of(exp) if exp.stack else [exp]))
    return rec


@dataclasses.dataclass
class _Prepared:
    """What a run is made from, before its model: its data, objective, teacher and encodings."""

    spec: object
    train_data: TaskData
    dev_data: TaskData
    objective: object
    teacher_rec: dict | None
    source: TeacherSource | None
    dev_cls: torch.Tensor | None
    tok: object
    train_enc: object
    dev_enc: object


def _prepare(exp: Experiment, progress: bool | None) -> _Prepared:
    spec = get_task(exp.task)
    train_data, dev_data = split_data(exp, "train"), split_data(exp, "dev")
    extra = augmented(exp, train_data, progress_enabled() if progress is None else progress) if exp.augment is not None else None
    objective = make_objective(exp.method, exp.hp)
    teacher_rec, source, dev_cls = None, None, None
    if exp.teacher is not None and objective.teacher_quantities:
        teacher_rec = run(exp.teacher, progress=progress) if isinstance(exp.teacher, Experiment) else None
        source, dev_cls = teacher_source(exp, objective, train_data, extra, progress)
    if extra is not None:
        train_data = concat(train_data, extra if exp.augment.labels == "copied" else unlabelled(extra))
    tok = load_tokenizer(exp.model.checkpoint)
    objective.use_tokenizer(tok)
    return _Prepared(spec, train_data, dev_data, objective, teacher_rec, source, dev_cls, tok,
                     encode(tok, train_data, exp.max_length), encode(tok, dev_data, exp.max_length))


def optim_args(exp: Experiment) -> OptimArgs:
    return OptimArgs(lr=exp.lr, weight_decay=exp.weight_decay, warmup_ratio=exp.warmup_ratio, optimizer=exp.optimizer)


def train_args(exp: Experiment) -> TrainArgs:
    return TrainArgs(epochs=exp.epochs, batch_size=exp.batch_size, evals_per_epoch=exp.evals_per_epoch,
                     keep=exp.keep, seed=exp.seed)


def _make(exp: Experiment, keep_model: bool, progress: bool | None) -> dict:
    p = _prepare(exp, progress)
    objective = p.objective
    model = build_model(exp, p.spec.num_labels, p.tok)
    runs = {k: v for k, v in exp.hp.items() if isinstance(v, Experiment)}
    if runs:  # runs named in the hyper-parameters (a generator's start): their kept weights
        with torch.random.fork_rng(devices=[]):
            objective.from_runs = {k: load_run_weights(v) for k, v in runs.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(exp.seed, "modules"))
        extra_modules = objective.build_modules(model, None if exp.teacher is None else _teacher_config(exp.teacher))
    if extra_modules:
        objective.modules = torch.nn.ModuleDict(extra_modules)
    step = objective.make_step(model, optim_args(exp))
    step.teacher = p.source
    state_dir = cache_dir() / "runs" / exp.hash / "state"
    with flops.run_tally() as work:  # the FLOPs and operator calls of its steps, when KDLIB_COUNT_FLOPS is set
        result = train(step, p.train_enc, p.dev_enc, exp.task, train_args(exp), teacher=p.source,
                       state_dir=state_dir, keep_weights=keep_model, pad_id=p.tok.pad_token_id or 0,
                       progress=progress, desc=exp.label or exp.method, dev_teacher_cls=p.dev_cls)
    examples = objective.examples(step, p.dev_enc, p.tok, seed_for(exp.seed, "examples"))
    record = make_record(exp, p, model, result, extra_modules, examples, work)
    return store_record(exp, record, model if keep_model else None, result.best_state, p.tok, state_dir)


def stack_of(exp: Experiment) -> list:
    """The runs of ``exp``'s stack, one per seed, in the stack's order."""
    return [exp.replace(seed=s) for s in exp.stack]


def _make_stack(exps: list, keep_model: bool, progress: bool | None) -> list:
    """Train the seeds of one stack as one model (:mod:`kdlib.stacked`); store and return every seed's record."""
    from .stacked import train_stacked

    first = exps[0]
    p = _prepare(first, progress)  # the data, objective and teacher are the same for every seed
    models = [build_model(e, p.spec.num_labels, p.tok) for e in exps]
    with flops.run_tally() as work:
        results = train_stacked(p.objective, models, list(first.stack), p.train_enc, p.dev_enc, first.task,
                                train_args(first), optim_args(first), teacher=p.source, keep_weights=keep_model,
                                pad_id=p.tok.pad_token_id or 0, progress=progress,
                                desc=f"{first.label or first.method} seeds {','.join(map(str, first.stack))}",
                                dev_teacher_cls=p.dev_cls)
    records = []
    for e, model, result in zip(exps, models, results):
        record = make_record(e, p, model, result, work=work,
                             stacked={"seeds": list(first.stack), "wall_time_is": "the whole stack's"})
        records.append(store_record(e, record, model if keep_model else None, result.best_state, p.tok))
    return records


def make_record(exp: Experiment, p: _Prepared, model, result, extra_modules=None, examples=None, work=None,
                **more) -> dict:
    """The record of ``exp`` trained as ``result`` (a :class:`~kdlib.train.TrainResult`), with its provenance."""
    source, logits = p.source, result.best_dev_logits
    return {
        "schema": 2,
        "hash": exp.hash,
        "label": exp.label,
        "config": exp.to_dict(),
        "best": result.best,
        "history": result.history,
        "losses": result.losses,
        "dev_logits": [] if logits is None else [[round(float(x), 4) for x in row] for row in logits.tolist()],
        "n_train": len(p.train_data),
        "n_dev": len(p.dev_data),
        "student_params": count_parameters(model),
        "trainable_modules": {n: count_parameters(m) for n, m in (extra_modules or {}).items()},
        "teacher": None if p.teacher_rec is None else {
            "hash": p.teacher_rec["hash"], "best": p.teacher_rec["best"],
            "agreement": _agreement(logits, p.teacher_rec, p.spec.is_regression)},
        "teacher_source": None if source is None else {
            "cached": list(source.cached.names) if source.cached else [],
            "live": list(source.live.names) if source.live else []},
        "wall_time_s": round(result.wall_time_s, 1),
        "peak_memory": result.peak_memory,
        # the live teacher's forward passes, per call, as this process measured them (a resumed run: since the resume)
        "teacher_live_s_per_call": None if source is None or source.live is None or not source.live.calls
        else round(source.live.seconds / source.live.calls, 5),
        "teacher_live_calls": None if source is None or source.live is None else source.live.calls,
        "teacher_floats_per_example": None if source is None or source.cached is None else p.objective.teacher_floats(
            {k: tuple(v.shape[1:]) for k, v in source.cached.tensors.items()},
            getattr(getattr(model, "config", None), "num_hidden_layers", 0)),
        "summary": result.best_summary,
        **({"examples": examples} if examples is not None else {}),
        **({"work": work} if flops.enabled() else {}),
        **more,
        **provenance(),
    }


def store_record(exp: Experiment, record: dict, model, best_state, tok, state_dir: Path | None = None) -> dict:
    """Write ``record`` atomically (and ``model`` with ``best_state`` loaded, when given, as the run's kept
    weights) from the main process only; returns the record exactly as a later load returns it."""
    text = json.dumps(record, indent=1) + "\n"
    from accelerate import PartialState

    if PartialState().is_main_process:  # under `accelerate launch` only one process writes
        if model is not None:
            model.load_state_dict(best_state)
            save_weights(exp, model, tok)
        atomic_write_text(record_path(exp), text)
        if state_dir is not None:
            _clean_state(state_dir)
    PartialState().wait_for_everyone()  # the others read the weights and the record only once written
    return json.loads(text)


#: the fields that are a run's outcome: a re-make that gives the same ones reproduces the run
OUTCOME = ("history", "best", "dev_logits")
#: how far a re-made run's outcome may stand from its stored record's and still reproduce it. The same code, seed
#: and thread count give the same bits on one kind of CPU; a CPU with other vector kernels (AVX2 against
#: AVX-512) rounds differently, which moves a stored 4-decimal logit or metric by a unit or two. A different best
#: step, or a metric off by one dev example, is far outside it.
REPRODUCED_ATOL = 5e-4


def _close(a, b, atol: float = REPRODUCED_ATOL) -> bool:
    """Whether two record values (nested dicts and lists of numbers) are the same up to ``atol`` in each number."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], atol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, atol) for x, y in zip(a, b))
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return abs(a - b) <= atol if numbers else (type(a) is type(b) and a == b)


def _keep_if_reproduced(exp: Experiment, path: Path, text: str, new: dict) -> dict:
    """After ``exp`` was trained again only for its weights: the record stored at ``path`` (``text``) if the
    new run reproduced its outcome (to within :data:`REPRODUCED_ATOL`), so that a page showing it (its wall
    time, its commit) does not change with the machine that last needed the weights; else the new record, with a
    warning naming what differs."""
    from accelerate import PartialState

    old = json.loads(text)
    differ = [k for k in OUTCOME if not _close(old.get(k), new.get(k))]
    exact = all(old.get(k) == new.get(k) for k in OUTCOME)
    what = f"{exp.label or exp.method} {exp.hash}"
    if differ:
        print(f"[kdlib] warning: the re-made {what} differs from its stored record in {', '.join(differ)}: "
              f"the stored record is replaced (git diff shows how)", flush=True)
        if PartialState().is_main_process and record_path(exp) != path:
            path.unlink(missing_ok=True)
        return new
    if PartialState().is_main_process:
        atomic_write_text(path, text)
        if record_path(exp) != path:
            record_path(exp).unlink(missing_ok=True)
    PartialState().wait_for_everyone()
    how = "identical" if exact else f"equal to within {REPRODUCED_ATOL:g}, as another CPU's rounding leaves them"
    print(f"[kdlib] the re-made {what} reproduces its stored record ({', '.join(OUTCOME)} {how}): "
          "the record is kept as stored", flush=True)
    return load_record(path, RECORD_FIELDS)


def _teacher_config(teacher):
    from transformers import AutoConfig

    if isinstance(teacher, Pretrained):
        return AutoConfig.from_pretrained(resolve_checkpoint(teacher.checkpoint))
    folder = model_dir(teacher)
    if (folder / "config.json").is_file():
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(folder)
    return None


def _agreement(student_logits, teacher_rec: dict, regression: bool) -> float | None:
    """How often the student's dev prediction equals the teacher's (percent)."""
    if regression or student_logits is None or not teacher_rec.get("dev_logits"):
        return None
    return round(agreement(student_logits.numpy(), teacher_rec["dev_logits"]), 2)


def _clean_state(state_dir: Path) -> None:
    import shutil

    shutil.rmtree(state_dir, ignore_errors=True)


def run_all(experiments, force: bool = False, progress: bool | None = None) -> list:
    """Run (or load) each experiment in turn; returns their records in the same order."""
    from tqdm import tqdm

    todo = [e for e in experiments if force or (recompute_requested() and e.hash not in _recomputed)
            or stored_path(e) is None]
    records = []
    show = progress_enabled() if progress is None else progress
    bar = tqdm(total=len(todo), desc="experiments", disable=not todo or not show, leave=False)
    for exp in experiments:
        fresh = exp in todo
        records.append(run(exp, force=force, progress=progress))
        if fresh:
            bar.update(1)
            best = records[-1]["best"]
            main = get_task(exp.task).main_metric
            score = f"dev {main} {best[main]:.2f} (epoch {best['epoch']})" if main in best else "no dev evaluation"
            print(f"[kdlib] {exp.chapter}/{exp.label or exp.method} seed {exp.seed}: {score}, "
                  f"{records[-1]['wall_time_s']:.0f} s")
    bar.close()
    return records


def run_plan(plan: dict, force: bool = False, progress: bool | None = None) -> dict:
    """Run (or load) every experiment of a chapter plan; returns ``{row: [records]}``."""
    flat = [e for exps in plan.values() for e in exps]
    records = iter(run_all(flat, force=force, progress=progress))
    return {row: [next(records) for _ in exps] for row, exps in plan.items()}
