"""What the layer-to-layer chapters share (Patient KD, ALP-KD, and those after them): their tasks and
student depths per profile, row labels, layer-copy students over seeds, the teacher of each task, the
depth-by-method table and the loss terms at initialisation.

Every run's epochs, learning rate, batch and length come from the settings table (:mod:`kdlib.settings`);
the student's depth is the only thing these chapters add.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..profiles import Profile
from . import seeds, teacher

#: ALP-KD's λ (chapter 7); here because chapter 3's loss-term measurement reports ALP's term too.
ALP_LAM = 10.0


@dataclass(frozen=True)
class Setting:
    tasks: tuple  # the first is the main task
    depths: tuple  # student depths, larger first


SETTINGS = {
    "smoke": Setting(("sst2", "stsb"), depths=(2, 1)),  # CI: a classification and the regression task
    "cpu": Setting(("sst2", "mrpc", "stsb"), depths=(3, 2)),
    "gpu": Setting(("sst2", "mrpc", "stsb"), depths=(6, 3)),
}


def setting(profile: Profile) -> Setting:
    s = SETTINGS[profile.name]
    if profile.name == "gpu" and profile.teacher != "bert-base-uncased":  # a 6-layer teacher: 3 and 2
        s = Setting(s.tasks, depths=(3, 2))
    return s


def tasks(profile: Profile) -> list:
    return list(setting(profile).tasks)


def task_teacher(profile: Profile, task: str):
    return teacher(profile, task)


def layers(depth: int) -> str:
    return f"{depth} layer" + ("" if depth == 1 else "s")


def row(task: str, depth: int, name: str) -> str:
    """A plan row's label, e.g. ``"sst2 · 3 layers · PKD-Skip"``."""
    return f"{task} · {depth} layers · {name}"


def seeds_of(profile: Profile, chapter: str, task: str, depth: int, method: str, name: str, n: int | None = None,
             **hparams) -> list:
    """A ``depth``-layer copy of the first layers of the pre-trained checkpoint per seed (the first ``n``
    seeds if given), labelled ``"sst2 3L PKD-Skip"``."""
    t = task_teacher(profile, task) if method != "finetune" else None
    return seeds(profile, chapter, task, method, t, f"{task} {depth}L {name}", n=n, layers=tuple(range(depth)),
                 **hparams)


def table(results: dict, profile: Profile, task: str, names: list, paper: dict, paper_depths: tuple,
          metric: str | None = None, paper_source: str | None = None):
    """Dev score (mean ± std over seeds) of each method (rows) at each student depth (columns), with the
    paper's figure for the matching depth rank beside (when ``paper_source`` is given), as a captioned
    :class:`~kdlib.report.Table` naming the task, the metric, the teacher's score and the setting."""
    from .. import report
    from ..data import get_task

    depths = setting(profile).depths
    df = report.pivot(results, names, depths, lambda name, d: row(task, d, name), metric)
    df.columns = [layers(d) for d in depths]
    if paper_source is not None:
        for rank, d in enumerate(paper_depths[:len(depths)]):
            df[f"paper, {layers(d)}"] = [paper.get((task, rank, name), "") for name in names]
    recs = results[row(task, depths[0], names[0])]
    metric = metric or report.main_metric(recs)
    teacher = results[f"{task} · teacher"][0]["best"][metric]
    what = f"{get_task(task).folder} dev {metric} by student depth (teacher: {teacher:.1f})"
    caption = report.caption(recs, what)
    if paper_source is not None:
        their_teacher = paper.get((task, 0, "teacher"))
        caption += f" Paper columns: {paper_source}" + (f"; the paper's teacher: {their_teacher}." if their_teacher else ".")
    return report.Table(df, caption, key=f"{task}-{metric}-{'paper' if paper_source else 'ours'}")


def differences(results: dict, profile: Profile, pairs: list, metric: str | None = None):
    """``A − B`` over seeds with Welch's p, for each task, depth and ``(A, B)`` in ``pairs``."""
    import pandas as pd

    from .. import report

    s = setting(profile)
    out = []
    for task in s.tasks:
        for d in s.depths:
            for a, b in pairs:
                ra, rb = results.get(row(task, d, a)), results.get(row(task, d, b))
                if ra and rb:
                    out.append({"task": task, "student": layers(d), "comparison": f"{a} − {b}",
                                "difference": report.difference(ra, rb, metric)})
    return pd.DataFrame(out)


def loss_terms_at_init(profile: Profile, chapter: str, T: float, beta: float, mappings: dict, lam: float,
                       n: int = 1000, force: bool = False, stored_only: bool = False) -> dict:
    """How big each loss term is before training, per task and student depth, on ``n`` *training* examples:
    CE, T²·KL, the patient term L_PT for each mapping (and β·L_PT) and ALP's term (and λ·L_ALP); and the
    mean norm of the teacher's [CLS] vector at each hidden state (embeddings first).

    This is how β and λ were chosen (no dev score involved). Stored as a measurement record."""
    from .. import losses
    from ..data import encode, get_task
    from ..mapping import make as make_map
    from ..models import load_tokenizer
    from ..runner import build_model, split_data, teacher_model
    from ..store import measurement
    from ..train import make_loader, predict

    s = setting(profile)
    students = {task: {d: seeds_of(profile, chapter, task, d, "finetune", "init")[0] for d in s.depths}
                for task in s.tasks}
    config = {"n": n, "depths": list(s.depths), "T": T, "beta": beta, "lam": lam, "scaled": True,
              "teachers": {task: task_teacher(profile, task).hash for task in s.tasks},
              "students": {task: {str(d): e.hash for d, e in by.items()} for task, by in students.items()}}

    def compute() -> dict:
        import torch

        rows, norms = [], {}
        for task in s.tasks:
            t_exp = task_teacher(profile, task)
            tok = load_tokenizer(t_exp.model.checkpoint)
            first = students[task][s.depths[-1]]
            data = split_data(first, "train")
            data = data.subset(min(n, len(data)), 0)
            loader = make_loader(encode(tok, data, first.max_length), 128, False)
            labels = torch.tensor(data.labels)
            t_logits, got = predict(teacher_model(t_exp), loader, quantities=("cls",))
            t_cls = got["cls"]
            norms[task] = [round(float(x), 3) for x in t_cls.norm(dim=-1).mean(0)]  # embeddings, layers 1..L
            spec = get_task(task)
            for depth in s.depths:
                model = build_model(students[task][depth], spec.num_labels, tok)
                s_logits, got = predict(model, loader, quantities=("cls",))
                s_cls = got["cls"]
                row_ = {"task": task, "depth": depth, "CE": losses.hard_loss(s_logits, labels).item(),
                        "T²·KL": (losses.logit_mse(s_logits, t_logits) if spec.is_regression else
                                  losses.kd_kl(s_logits, t_logits, T)).item()}
                for name, kind in mappings.items():
                    m = make_map(kind, depth, t_cls.size(1) - 1)
                    pt = losses.pkd_patient(s_cls[:, m.student_layers], t_cls[:, m.teacher_layers]).item()
                    row_[f"L_PT {name}"], row_[f"β·L_PT {name}"] = pt, beta * pt
                a = losses.alp_loss(s_cls[:, 1:], t_cls[:, 1:]).item()
                row_["L_ALP"], row_["λ·L_ALP"] = a, lam * a
                rows.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row_.items()})
        return {"rows": rows, "teacher_cls_norms": norms, "n_examples": n}

    return measurement("loss_terms", profile.name, chapter, config, compute, force, stored_only)
