"""Chapter 7 — Passban et al. 2021, *ALP-KD: Attention-Based Layer Projection for Knowledge Distillation*.

Instead of a fixed map, every student layer j attends over *all* teacher layers k,
``α_jk = softmax_k(h_s^j · h_t^k / √d)``, and is pulled towards the mixture ``c^j = Σ_k α_jk h_t^k``:
``L = β·CE + η·T²·KL + λ·Σ_j MSE(h_s^j, c^j)`` on [CLS] vectors (:func:`kdlib.losses.alp_kd`).

Rows, on the tasks and student depths of the Patient-KD chapter (whose records they share): the student on
labels, vanilla KD, PKD-Last, PKD-Skip and ALP-KD. The weights are fixed before any run, not searched:
β = η = 0.5 and T = 2, so that the CE and KD terms weigh exactly what they weigh in vanilla KD and PKD
(α = 0.5), and λ = 10, which makes the ALP term 0.17–0.21 at initialisation on 1,000 training examples
(MSE of raw [CLS] vectors whose units have variance ≈ 0.24), the size PKD's term has at β = 500 for
PKD-Last. One ablation row (first seed, SST-2, the smaller student) drops the 1/√d scaling.
"""
from __future__ import annotations

from .. import papers
from ..profiles import Profile
from . import layerwise, pkd

CHAPTER = "alp"
T, BETA, ETA, LAM = pkd.T, 1 - pkd.ALPHA, pkd.ALPHA, layerwise.ALP_LAM


def alp_rows(profile: Profile, task: str, depth: int) -> dict:
    return {pkd.row(task, depth, "ALP-KD"): layerwise.seeds_of(profile, CHAPTER, task, depth, "alp", "ALP",
                                                               T=T, beta=BETA, eta=ETA, lam=LAM)}


def plan(profile: Profile) -> dict:
    s = pkd.setting(profile)
    rows = {}
    for task in s.tasks:
        rows[f"{task} · teacher"] = [layerwise.task_teacher(profile, task)]
        for depth in s.depths:
            rows.update(pkd.kd_rows(profile, task, depth))
            rows.update(pkd.pkd_rows(profile, task, depth))
            rows.update(alp_rows(profile, task, depth))
    main, small = pkd.tasks(profile)[0], s.depths[-1]
    rows[f"ablation: {main} · {small} layers · ALP-KD without 1/√d"] = layerwise.seeds_of(
        profile, CHAPTER, main, small, "alp", "ALP unscaled", n=1, T=T, beta=BETA, eta=ETA, lam=LAM, scaled=False)
    return rows


#: GLUE *dev* figures of the paper (BERT-base teacher, 12 layers; 4-layer and 2-layer students, set beside
#: our larger (rank 0) and smaller (rank 1) student), from kdlib/papers.yaml; SST-2 and MRPC accuracy, STS-B
#: Pearson. The paper's PKD row (4 layers) stands on PKD-Skip; for 2 layers it gives PKD only as an
#: average over tasks, so that cell stays empty.
_ROWS = {"teacher": "teacher", "fine-tuned on labels": "no KD", "vanilla KD": "KD", "PKD-Skip": "PKD",
         "ALP-KD": "ALP"}
_COLUMNS = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B"}


def _paper() -> dict:
    out = {}
    for rank, table in enumerate(("dev_4layer", "dev_2layer")):
        info = papers.table_info("passban2021alpkd", table)
        for ours, theirs in _ROWS.items():
            for task, col in _COLUMNS.items():
                values = info["rows"].get(theirs)
                if values is None or values[info["columns"].index(col)] is None:
                    continue  # no 2-layer teacher row; PKD and CKD as averages only
                value = papers.figure("passban2021alpkd", table, theirs, col).value
                out[(task, rank, ours)] = f"{value} acc" if task == "mrpc" and ours != "teacher" else value
    return out


PAPER = _paper()
PAPER_DEPTHS = (4, 2)
PAPER_SOURCE = (f"{papers.source('passban2021alpkd', 'dev_4layer')} and 2-layer students, BERT-base teacher; "
                "MRPC and SST-2 accuracy, STS-B Pearson")
NAMES = pkd.NAMES + ["ALP-KD"]


def table(results: dict, profile: Profile, task: str, metric: str | None = None, paper: bool = True):
    return layerwise.table(results, profile, task, NAMES, PAPER, PAPER_DEPTHS, metric,
                           PAPER_SOURCE if paper else None)


def gain_over_pkd(results: dict, profile: Profile, metric: str | None = None):
    """ALP-KD minus the better PKD mapping (by mean), and minus vanilla KD, at each task and depth: the
    difference as text (with Welch's p) and as numbers (``gain`` and its standard error ``se``)."""
    from statistics import mean, variance

    import pandas as pd

    from .. import report

    def se(a, b):
        return (variance(a) / len(a) + variance(b) / len(b)) ** 0.5 if min(len(a), len(b)) > 1 else 0.0

    s = pkd.setting(profile)
    out = []
    for task in s.tasks:
        for d in s.depths:
            alp_recs = results.get(pkd.row(task, d, "ALP-KD"))
            if not alp_recs:
                continue
            cands = {n: results[pkd.row(task, d, n)] for n in pkd.MAPPINGS if pkd.row(task, d, n) in results}
            best = max(cands, key=lambda n: mean(report.scores(cands[n], metric)))
            a, b = report.scores(alp_recs, metric), report.scores(cands[best], metric)
            out.append({"task": task, "depth": d, "better PKD": best,
                        "ALP − better PKD": report.difference(alp_recs, cands[best], metric),
                        "ALP − vanilla KD": report.difference(alp_recs, results[pkd.row(task, d, "vanilla KD")],
                                                              metric),
                        "gain": mean(a) - mean(b), "se": se(a, b)})
    return pd.DataFrame(out)
