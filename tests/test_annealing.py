"""Annealing KD as two runs: stage I anneals the teacher's logits from Φ(τ_max)·z_t to z_t, stage II trains on
the labels from stage I's best weights (a run that starts from a run)."""
import pytest

from kdlib.config import Experiment, FromRun, LayerCopy, Pretrained
from kdlib.errors import KDLibError
from kdlib.methods import make_objective

SMOKE = dict(profile="smoke", data="synthetic", train_size=64, dev_size=32, max_length=32, batch_size=16)


def test_the_objective_follows_the_schedule_the_loop_drives(store, monkeypatch):
    from kdlib import methods
    from kdlib.runner import run

    seen = []

    class Spy(methods.AnnealingKD):
        def loss(self, out, batch):
            seen.append(self.T)
            return super().loss(out, batch)

    monkeypatch.setitem(methods.METHODS, "annealing", Spy)
    teacher = Experiment(chapter="teachers", task="sst2", method="finetune", model=Pretrained("minilm-l6"), epochs=1,
                         lr=1e-4, keep_model=True, **SMOKE)
    stage1 = Experiment(chapter="annealing", task="sst2", method="annealing", model=LayerCopy("minilm-l6", (0,)),
                        teacher=teacher, hparams={"tau_max": 4}, epochs=2, lr=1e-3, evals_per_epoch=1,
                        keep_model=True, **SMOKE)
    stage2 = Experiment(chapter="annealing", task="sst2", method="finetune", model=FromRun(stage1), epochs=1, lr=1e-3,
                        **SMOKE)
    rec = run(stage2)
    assert seen == [4, 4, 3, 3, 2, 2, 1, 1]  # 8 steps: τ_max down to 1 in order, equal shares
    assert rec["config"]["model"]["run"]["hash"] == stage1.hash  # stage II starts from stage I's kept weights


def test_bad_tau_max_is_one_line():
    with pytest.raises(KDLibError, match="tau_max must be an integer >= 1, got 0"):
        make_objective("annealing", {"tau_max": 0})
    with pytest.raises(KDLibError, match="tau_max must be an integer >= 1, got 2.5"):
        make_objective("annealing", {"tau_max": 2.5})


def test_the_chapter_plan_and_its_chains_on_smoke(store):
    from kdlib.chapters import annealing, chapter_plan
    from kdlib.profiles import get_profile
    from kdlib.runner import run

    cpu = annealing.plan(get_profile("cpu"))
    assert [r for r in cpu if r.startswith("rte")] == ["rte · teacher", "rte · assistant", "rte · labels only",
                                                      "rte · KD", "rte · TAKD", "rte · Annealing KD"]
    assert cpu["sst2 · KD"][0].hash == chapter_plan("hinton", "cpu")["student, KD T=2 α=0.5"][0].hash  # one record
    ann = cpu["rte · Annealing KD"][0]
    assert ann.method == "finetune" and ann.model.run.method == "annealing" and ann.model.run.hp == {"tau_max": 14}
    assert cpu["sst2 · Annealing KD"][0].model.run.hp == {"tau_max": 7}
    takd = cpu["mrpc · TAKD"][1]
    assert len(takd.teacher.model.layers) == 4 and takd.teacher.teacher.model.kind == "pretrained"
    chain = annealing.plan(get_profile("smoke"))["stsb · Annealing KD"][0]  # regression: stage II is MSE on scores
    rec = run(chain)
    assert rec["config"]["model"]["run"]["hash"] == chain.model.run.hash and "pearson" in rec["best"]


def test_the_gpu_setting_keeps_the_papers_depth_ratios_under_bert_base(monkeypatch):
    """BERT-small (4 of BERT-large's 24 layers) under BERT-base's assistant (half the teacher): 2 and 6 of 12."""
    from kdlib.chapters import annealing
    from kdlib.profiles import get_profile

    monkeypatch.setenv("KDLIB_GPU_TEACHER", "bert-base-uncased")
    s = annealing.setting(get_profile("gpu"))
    assert (len(s.student_layers), len(s.assistant_layers)) == (2, 6)
    monkeypatch.setenv("KDLIB_GPU_TEACHER", "minilm-l6")  # a 6-layer teacher: the cpu setting's depths
    s = annealing.setting(get_profile("gpu"))
    assert (len(s.student_layers), len(s.assistant_layers)) == (2, 4)
    assert annealing.assistant(get_profile("gpu"), "sst2").model.layers == (0, 1, 2, 3)


def test_the_stage_table_pairs_each_seeds_two_stages(store):
    import json

    from kdlib.chapters import annealing, chapter_plan
    from kdlib.profiles import get_profile
    from kdlib.store import atomic_write_text, record_path

    P = get_profile("smoke")
    plan = chapter_plan("annealing", "smoke")
    results = {}
    for task in annealing.setting(P).tasks:
        metric = "pearson" if task == "stsb" else "accuracy"
        row = annealing.row(task, "Annealing KD")
        results[row] = []
        for e, one, two in zip(plan[row], (80.0, 82.0, 81.0), (79.0, 82.5, 80.0)):
            atomic_write_text(record_path(annealing.stage_one(e)), json.dumps(
                {"hash": annealing.stage_one(e).hash, "config": {"task": task}, "best": {metric: one}, "history": [],
                 "dev_logits": []}))
            results[row].append({"config": {"task": task}, "best": {metric: two}})
    df = annealing.stage_table(results, plan, P).df
    first = df.iloc[0]
    assert len(plan[row]) == 2  # the smoke profile's seeds: (80, 82) then (79, 82.5)
    assert first["stage I"] == "81.00 ± 1.41" and first["stage II"] == "80.75 ± 2.47"
    assert first["stage II − stage I"] == "-0.25 ± 1.06" and first["seeds where stage II is lower"] == "1 of 2"
