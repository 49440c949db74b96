"""Chapter 4 — Jiao et al. 2020, *TinyBERT: Distilling BERT for Natural Language Understanding* (plan).

The student is narrower as well as shallower than its teacher, so nothing can be copied: a fresh BERT with
the teacher's head count learns everything by distillation, in two stages that are runs starting from runs:

1. *general distillation* on plain text (the ``text`` task) from the **pre-trained** checkpoint:
   attention, hidden-state and embedding losses, no labels, the last state kept;
2. *task distillation* from the general-distillation weights with the **fine-tuned** teacher, on the
   training set plus TinyBERT's augmented sentences: (i) the intermediate losses, then (ii) the prediction
   loss (soft cross-entropy at T = 1).

The shape is TinyBERT4's in proportion: 4 of BERT-base's 12 layers and 312 of its 768 units become 2 of
``minilm-l6``'s 6 layers and 156 of its 384 (13 per head, 12 heads), FFN 600 (1200/3072 of 1536).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .. import settings
from ..config import Experiment, FreshBert, FromRun, Pretrained, TinyBertAugment
from ..profiles import Profile
from . import masked_lm, teacher

CHAPTER = "tinybert"


@dataclass(frozen=True)
class Setting:
    layers: int
    hidden: int
    heads: int
    ffn: int
    tasks: tuple
    n_aug: int  # augmented sentences per training sentence (the paper: 20 for SST-2, 30 for small tasks)
    #: task → epochs of task distillation's (intermediate, prediction) stages over the training set plus its
    #: augmentations; a task not named here uses the settings table's student epochs for both
    stage_epochs: dict
    #: the task of the ablations: CoLA, where the paper's ablations (Tables 6–8, MNLI, MRPC and CoLA) move most
    ablation_task: str = "cola"
    p_t: float = 0.4
    k: int = 15


SETTINGS = {
    # CI: one epoch a stage (the first runs the 6-layer teacher on every batch)
    "smoke": Setting(layers=1, hidden=48, heads=12, ffn=96, tasks=("sst2",), n_aug=1, stage_epochs={"sst2": (1, 1)},
                     ablation_task="sst2"),
    # one augmentation per sentence (per side of a pair), and about as many examples per stage as the settings
    # table gives the students that train on labels: SST-2 2 epochs of 67k sentences, 1 epoch of 67k + 67k
    "cpu": Setting(layers=2, hidden=156, heads=12, ffn=600, tasks=("sst2", "mrpc", "stsb", "cola"), n_aug=1,
                   stage_epochs={"sst2": (1, 1), "mrpc": (4, 3), "stsb": (3, 3), "cola": (4, 4)}),
    # the paper's code: 10 epochs of intermediate-layer distillation, then 3 of the prediction layer
    "gpu": Setting(layers=4, hidden=312, heads=12, ffn=1200, tasks=("sst2", "mrpc", "stsb", "cola"), n_aug=20,
                   stage_epochs={t: (10, 3) for t in ("sst2", "mrpc", "stsb", "cola")}),
}


def setting(profile: Profile) -> Setting:
    s = SETTINGS[profile.name]
    if profile.name == "gpu" and profile.teacher != "bert-base-uncased":
        # a 6-layer teacher (no hub): the cpu student's shape, whose depth divides the teacher's (the uniform map)
        cpu = SETTINGS["cpu"]
        s = replace(s, layers=cpu.layers, hidden=cpu.hidden, heads=cpu.heads, ffn=cpu.ffn)
    return s


def student_model(profile: Profile) -> FreshBert:
    s = setting(profile)
    return FreshBert(profile.teacher, s.layers, s.hidden, s.heads, s.ffn)


def general(profile: Profile, seed: int = 0, **hparams) -> Experiment:
    """General distillation on the GLUE training sentences from the pre-trained checkpoint (no labels, no dev
    score, the last state kept): the start of every TinyBERT row of every task."""
    r = settings.get(profile, "text", "student")
    return Experiment(chapter=CHAPTER, profile=profile.name, task="text", method="tinybert",
                      model=student_model(profile), teacher=Pretrained(profile.teacher),
                      hparams={"stage": "intermediate", **hparams}, data=profile.data,
                      train_size=profile.train_size, dev_size=profile.dev_size, epochs=r.epochs, lr=r.lr,
                      batch_size=r.batch_size, max_length=r.max_length, seed=seed, evals_per_epoch=0, keep="last",
                      label="general distillation", keep_model=True)


def augmentation(profile: Profile) -> TinyBertAugment:
    s = setting(profile)
    return TinyBertAugment(masked_lm(profile), p_t=s.p_t, k=s.k, n_aug=s.n_aug)


def task_run(profile: Profile, task: str, method: str, seed: int, model, label: str, teacher_exp=None,
             augment=None, keep: str = "best", keep_model: bool = False, epochs: int | None = None,
             **hparams) -> Experiment:
    """A run on ``task`` with the settings table's student row (evaluated unless it keeps its last state)."""
    r = settings.get(profile, task, "student")
    return Experiment(chapter=CHAPTER, profile=profile.name, task=task, method=method, model=model,
                      teacher=teacher_exp, hparams=hparams, data=profile.data, train_size=profile.train_size,
                      dev_size=profile.dev_size, epochs=epochs or r.epochs, lr=r.lr, batch_size=r.batch_size,
                      max_length=r.max_length, seed=seed, evals_per_epoch=r.evals_per_epoch if keep == "best" else 0,
                      keep=keep, augment=augment, label=label, keep_model=keep_model)


def tinybert(profile: Profile, task: str, seed: int, start=None, augment=True, label: str = "TinyBERT",
             **hparams) -> Experiment:
    """Task distillation: the intermediate stage from ``start`` (general distillation by default), then the
    prediction stage from its weights, both on the training set plus the augmented sentences."""
    t, aug = teacher(profile, task), augmentation(profile) if augment else None
    first = intermediate(profile, task, seed, start, augment, label, **hparams)
    return task_run(profile, task, "tinybert", seed, FromRun(first), label, t, aug,
                    epochs=stage_epochs(profile, task)[1], stage="prediction",
                    **{k: v for k, v in hparams.items() if k == "pred"})


def intermediate(profile: Profile, task: str, seed: int, start=None, augment=True, label: str = "TinyBERT",
                 **hparams) -> Experiment:
    """Task distillation's first stage: the intermediate losses from ``start`` (general distillation by
    default) with the fine-tuned teacher, the last state kept for the second stage."""
    start = FromRun(general(profile)) if start is None else start
    aug = augmentation(profile) if augment else None
    return task_run(profile, task, "tinybert", seed, start, f"{label}: intermediate", teacher(profile, task), aug,
                    keep="last", keep_model=True, epochs=stage_epochs(profile, task)[0], stage="intermediate",
                    **hparams)


def stage_epochs(profile: Profile, task: str) -> tuple:
    """Epochs of task distillation's two stages on ``task`` (the intermediate layers, then the prediction)."""
    epochs = settings.get(profile, task, "student").epochs
    return setting(profile).stage_epochs.get(task, (epochs, epochs))


def plan(profile: Profile) -> dict:
    s = setting(profile)
    fresh, gd = student_model(profile), FromRun(general(profile))
    rows = {}
    for task in s.tasks:
        t = teacher(profile, task)
        each = lambda f: [f(seed) for seed in profile.seeds[:3]]  # noqa: E731
        rows[f"{task} · teacher"] = [t]
        rows[f"{task} · labels only, random init"] = each(lambda sd: task_run(profile, task, "finetune", sd, fresh,
                                                                             "labels, random init"))
        rows[f"{task} · labels only, from GD"] = each(lambda sd: task_run(profile, task, "finetune", sd, gd,
                                                                         "labels, from GD"))
        rows[f"{task} · KD, from GD"] = each(lambda sd: task_run(profile, task, "kd", sd, gd, "KD, from GD", t,
                                                                T=1.0, alpha=1.0))
        rows[f"{task} · TinyBERT"] = each(lambda sd: tinybert(profile, task, sd))
    main = s.ablation_task
    rows[f"ablation: {main} · no general distillation"] = [tinybert(profile, main, 0, start=fresh, label="no GD")]
    rows[f"ablation: {main} · no augmentation"] = [tinybert(profile, main, 0, augment=False, label="no DA")]
    for term in ("attn", "hidn", "embd"):
        rows[f"ablation: {main} · no L_{term}"] = [tinybert(profile, main, 0, label=f"no {term}", **{term: 0.0})]
    # without the prediction loss the second stage trains on the labels (the training set, not augmented);
    # its first stage is the TinyBERT row's own
    rows[f"ablation: {main} · no L_pred"] = [task_run(profile, main, "finetune", 0, FromRun(intermediate(profile, main, 0)),
                                                       "no pred", epochs=stage_epochs(profile, main)[1])]
    for mapping in ("top", "bottom"):
        rows[f"ablation: {main} · {mapping} layer map"] = [tinybert(profile, main, 0, label=f"{mapping} map",
                                                                    mapping=mapping)]
    return rows


# ---------------------------------------------------------------------------------------------------
# What the page shows: results against the paper, the ablations, the transfer set, the attention maps
# ---------------------------------------------------------------------------------------------------
NAMES = ("teacher", "labels only, random init", "labels only, from GD", "KD, from GD", "TinyBERT")
#: the paper's GLUE column of each task
PAPER_COLUMN = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA"}
PAPER_ROW = "TinyBERT4 (14.5M)"
#: ablation rows of the plan (or a main row's first seed) → the paper's table and row
ABLATIONS = (
    ("TinyBERT", "TinyBERT", "ablation_procedure", "TinyBERT4"),
    ("no general distillation", "no GD", "ablation_procedure", "w/o GD"),
    ("labels only, from GD", "no TD (labels, from GD)", "ablation_procedure", "w/o TD"),
    ("no augmentation", "no DA", "ablation_procedure", "w/o DA"),
    ("no L_attn", "no L_attn", "ablation_losses", "w/o Attn"),
    ("no L_hidn", "no L_hidn", "ablation_losses", "w/o Hidn"),
    ("no L_embd", "no L_embd", "ablation_losses", "w/o Embd"),
    ("no L_pred", "no L_pred (stage 2 on labels)", "ablation_losses", "w/o Pred"),
    ("top layer map", "top layer map", "ablation_mapping", "top"),
    ("bottom layer map", "bottom layer map", "ablation_mapping", "bottom"),
)


def row(task: str, name: str) -> str:
    return f"{task} · {name}"


def table(results: dict, profile: Profile, task: str, metric: str | None = None, paper: bool = True):
    """Dev score of each row on ``task`` (mean ± std over seeds) with TinyBERT4's GLUE test figure beside it,
    as a captioned :class:`~kdlib.report.Table`."""
    from .. import papers, report
    from ..data import get_task

    rows = [row(task, n) for n in NAMES]
    theirs = None
    if paper and task in PAPER_COLUMN:
        theirs = {row(task, "TinyBERT"): papers.figure("jiao2020tinybert", "glue_test", PAPER_ROW,
                                                        PAPER_COLUMN[task]).value}
    df = report.results_table(results, rows, metric, theirs, "paper: TinyBERT4, test")
    df.index = list(NAMES)
    labels = results[row(task, "labels only, random init")]
    metric = metric or report.main_metric(labels)
    e1, e2 = stage_epochs(profile, task)
    what = (f"{get_task(task).folder} dev {metric}: the student trained four ways (teacher: "
            f"{results[row(task, 'teacher')][0]['best'][metric]:.1f})")
    caption = report.caption(labels, what) + (
        f" TinyBERT: {e1:g} + {e2:g} epochs (intermediate, prediction) on the training set and its augmentations; "
        "its min / run is the prediction stage's.")
    if theirs:
        caption += f" Paper: {papers.source('jiao2020tinybert', 'glue_test')}, BERT-base teacher, 4 layers of width 312."
    return report.Table(df, caption, key=f"tinybert-{task}-{metric}")


def ablation_table(results: dict, profile: Profile):
    """The ablations (seed 0) against the TinyBERT row's seed 0, beside the paper's Tables 6–8 on the same
    task (its average over four columns where it has no column for the task)."""
    import pandas as pd

    from .. import papers, report

    task = setting(profile).ablation_task
    col = PAPER_COLUMN[task] if task in ("mrpc", "cola") else "avg"
    ours = lambda name: results.get(f"ablation: {task} · {name}") or results[row(task, name)][:1]  # noqa: E731
    main = ours("TinyBERT")[0]
    metric = report.main_metric([main])
    base_paper = float(papers.figure("jiao2020tinybert", "ablation_procedure", "TinyBERT4", col).value)
    out = []
    for name, shown, table_, paper_row in ABLATIONS:
        rec = ours(name)[0]
        theirs = float(papers.figure("jiao2020tinybert", table_, paper_row, col).value)
        out.append({"": shown, f"dev {metric}": rec["best"][metric], "− TinyBERT": rec["best"][metric] - main["best"][metric],
                    f"paper ({col})": theirs, "paper − TinyBERT4": theirs - base_paper})
    df = pd.DataFrame(out).set_index("")
    df.index.name = None
    from ..data import get_task

    recs = results[row(task, "TinyBERT")]
    what = (f"Ablations on {get_task(task).folder} dev {metric}, seed 0 each (the TinyBERT row over {len(recs)} "
            f"seeds: {report.mean_std(report.scores(recs))})")
    caption = report.caption([main], what) + (
        f" Paper: {papers.source('jiao2020tinybert', 'ablation_procedure')}, Tables 6–8, TinyBERT4 on GLUE dev, "
        f"column {col}.")
    return report.Table(df, caption, key=f"tinybert-ablations-{task}", precision=1)


def stages(profile: Profile, task: str, seed: int = 0) -> dict:
    """The runs behind one TinyBERT row, in order: general distillation, task distillation's two stages."""
    final = tinybert(profile, task, seed)
    return {"general distillation": general(profile), "task distillation 1: intermediate": final.model.run,
            "task distillation 2: prediction": final}


def cost_table(profile: Profile, task: str, seed: int = 0):
    """Wall time of each stage of one TinyBERT row (the stored records), its steps, and what the live teacher's
    forward pass cost per step where the record measured it."""
    import pandas as pd

    from .. import report
    from ..runner import run

    out = []
    for name, exp in stages(profile, task, seed).items():
        rec = run(exp)
        steps = rec["history"][-1]["step"] if rec["history"] else max(p["step"] for p in rec["losses"])
        live = rec.get("teacher_live_s_per_call")
        out.append({"": name, "task": exp.task, "examples": f"{rec['n_train']:,}", "epochs": f"{exp.epochs:g}",
                    "steps": f"{steps:,}", "min": f"{rec['wall_time_s'] / 60:.1f}",
                    "s / step": f"{rec['wall_time_s'] / steps:.3f}",
                    "teacher forward s / step": "cached" if not (rec.get("teacher_source") or {}).get("live")
                    else ("not recorded" if live is None else f"{live:.3f}")})
    df = pd.DataFrame(out).set_index("")
    df.index.name = None
    return report.Table(df, f"What one TinyBERT row costs on {task}, stage by stage (seed {seed}; the general "
                        f"distillation is shared by every row and task). Setting: "
                        f"{report.describe_setting([run(exp)], width=None)}.", key=f"tinybert-cost-{task}")


def corpus(profile: Profile) -> dict | None:
    """Sentences and words of the ``text`` task (general distillation's corpus), as a stored measurement."""
    from . import stored_measurement
    from ..runner import split_data

    gd = general(profile)

    def compute() -> dict:
        data = split_data(gd, "train")
        return {"sentences": len(data), "words": sum(len(t.split()) for t in data.text_a)}

    return stored_measurement("corpus", CHAPTER, profile.name, {"task": "text", "data": gd.data,
                                                               "train_size": gd.train_size}, compute)


def augmentation_examples(profile: Profile, task: str, indices=(0, 1, 2)) -> dict | None:
    """TinyBERT's augmenter at work on some training sentences of ``task`` (each word's candidates and the
    samples), drawn as the transfer set is, as a stored measurement."""
    from . import stored_measurement
    from ..runner import augmenter_arguments, split_data

    aug = augmentation(profile)
    exp = tinybert(profile, task, 0)

    def compute() -> dict:
        data = split_data(exp.replace(augment=None), "train")
        cands = augmenter_arguments(aug)["candidates"]
        maker = aug.make(seed=exp.subset_seed)
        maker = type(maker)(**{**maker.__dict__, "n_aug": 3})  # three samples each, to show more than one
        return {"examples": [maker.examples(data.text_a[i].split(), cands, i) for i in indices]}

    return stored_measurement("augmentation_examples", CHAPTER, profile.name,
                              {"task": task, "augment": aug.hash_dict(), "indices": list(indices), "n_aug": 3},
                              compute)


def attention_maps(profile: Profile, task: str | None = None) -> dict | None:
    """The attention of the teacher and of the student before and after distillation on one dev sentence of
    ``task`` (the first of 8 to 14 words): for each student layer and the teacher layer the uniform map pairs
    it with, every head's attention probabilities and the pre-softmax scores' MSE against the teacher's. A
    stored measurement (the weights it reads are not in the repository)."""
    import torch

    from . import stored_measurement
    from ..data import get_task
    from ..mapping import make as make_map
    from ..models import capture_attention_scores, load_tokenizer
    from ..runner import build_model, load_run_weights, split_data

    s = setting(profile)
    task = task or s.tasks[0]
    first = intermediate(profile, task, 0)
    fresh = task_run(profile, task, "finetune", 0, student_model(profile), "random init")
    models = {"teacher": teacher(profile, task), "student, random init": fresh,
              "after general distillation": general(profile), "after task distillation (stage 1)": first}
    def compute() -> dict:
        dev = split_data(first.replace(augment=None), "dev")
        index = next((i for i, t in enumerate(dev.text_a) if 8 <= len(t.split()) <= 14), 0)
        tok = load_tokenizer(profile.teacher)
        enc = tok(dev.text_a[index], return_tensors="pt")
        out, scores_of = {}, {}
        for name, exp in models.items():
            with torch.random.fork_rng(devices=[]):
                model = build_model(exp, get_task(task).num_labels, tok) if name == "student, random init" \
                    else load_run_weights(exp)
            with torch.no_grad(), capture_attention_scores(model.eval()) as scores:
                model(**enc)
            scores_of[name] = [x[0] for x in scores]  # per layer: (heads, T, T)
        t_scores = scores_of["teacher"]
        pairs = [p for p in make_map("uniform", s.layers, len(t_scores)).pairs if p[0] > 0]
        for name, sc in scores_of.items():
            layers = [t for _, t in pairs] if name == "teacher" else [st for st, _ in pairs]
            out[name] = {"layers": layers,
                         "probs": [[[[round(float(v), 3) for v in r] for r in h] for h in sc[l - 1].softmax(-1)]
                                   for l in layers],
                         "score_mse": [float(((sc[st - 1] - t_scores[t - 1]) ** 2).mean()) for st, t in pairs]}
        return {"index": index, "tokens": tok.convert_ids_to_tokens(enc["input_ids"][0]), "maps": out}

    return stored_measurement("attention_maps", CHAPTER, profile.name,
                              {"task": task, "models": {k: v.hash for k, v in models.items()}}, compute)


def measure(profile: Profile, devices: tuple = ("cpu", "cuda"), force: bool = False) -> list:
    """Size/speed records (the teacher, chapter 1's two-layer copy and TinyBERT's student on the SST-2 training
    set, batch 512), one per device that is here or whose record was stored elsewhere."""
    from . import size_speed_records, student

    task = "sst2" if "sst2" in setting(profile).tasks else setting(profile).tasks[0]
    models = {"teacher": teacher(profile, task),
              f"{len(profile.student_layers)}-layer copy (chapter 1)": student(profile, CHAPTER, task, "finetune", 0),
              "TinyBERT's student": task_run(profile, task, "finetune", 0, student_model(profile), "TinyBERT")}
    return size_speed_records(CHAPTER, models, "teacher", devices, force)


def draw_attention(rec: dict):
    """The attention maps of :func:`attention_maps` side by side: a row per model, a column per mapped layer,
    one head per column — the head whose *teacher* map is sharpest (lowest mean entropy over its rows)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .. import report

    maps, tokens = rec["maps"], rec["tokens"]
    names = list(maps)
    n_layers = len(maps["teacher"]["layers"])
    heads = [int(np.argmin([report.entropy_bits(np.asarray(h)).mean() for h in maps["teacher"]["probs"][j]]))
             for j in range(n_layers)]
    fig, axes = plt.subplots(len(names), n_layers, figsize=(3.3 * n_layers, 3.1 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        for j in range(n_layers):
            ax = axes[i, j]
            ax.imshow(np.asarray(maps[name]["probs"][j][heads[j]]), cmap="viridis", vmin=0, vmax=1)
            layer = maps[name]["layers"][j]
            mse = "" if name == "teacher" else f"\nscore MSE vs teacher {maps[name]['score_mse'][j]:.2f} (all heads)"
            ax.set_title(f"{name}\nlayer {layer}, head {heads[j]}{mse}", fontsize=8)
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
    fig.tight_layout()
    return fig
