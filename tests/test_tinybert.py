"""TinyBERT's two stages as runs that start from runs: general distillation on plain text from the
pre-trained (not fine-tuned) checkpoint, then task distillation (intermediate, then prediction) from its
weights with the fine-tuned teacher."""
import math
import pytest

from kdlib.config import Experiment, FreshBert, FromRun, Pretrained
from kdlib.errors import KDLibError

SMOKE = dict(profile="smoke", data="synthetic", train_size=64, dev_size=32, max_length=32, batch_size=32)
STUDENT = FreshBert("minilm-l6", layers=2, hidden=48, heads=12, intermediate=96)  # the teacher's 12 heads


def general(**kw):
    config = dict(chapter="tinybert", task="text", method="tinybert", model=STUDENT, teacher=Pretrained("minilm-l6"),
                  hparams={"stage": "intermediate"}, epochs=1, lr=1e-3, evals_per_epoch=0, keep="last",
                  keep_model=True, **SMOKE)
    return Experiment(**{**config, **kw})


def test_general_then_task_distillation_chain(store):
    from kdlib.runner import run

    teacher = Experiment(chapter="teachers", task="sst2", method="finetune", model=Pretrained("minilm-l6"), epochs=1,
                         lr=1e-4, keep_model=True, **SMOKE)
    gd = general()
    stage1 = Experiment(chapter="tinybert", task="sst2", method="tinybert", model=FromRun(gd), teacher=teacher,
                        hparams={"stage": "intermediate"}, epochs=1, lr=1e-3, evals_per_epoch=1, keep="last",
                        keep_model=True, **SMOKE)
    stage2 = Experiment(chapter="tinybert", task="sst2", method="tinybert", model=FromRun(stage1), teacher=teacher,
                        hparams={"stage": "prediction"}, epochs=1, lr=1e-3, evals_per_epoch=1, **SMOKE)
    rec = run(stage2)
    assert rec["config"]["model"]["run"]["model"]["run"]["hash"] == gd.hash  # the chain, nested in the config
    assert rec["teacher_source"] == {"cached": ["logits"], "live": []} and "accuracy" in rec["best"]
    g = run(gd)
    assert g["teacher"] is None and g["config"]["teacher"] == {"kind": "pretrained", "checkpoint": "minilm-l6"}
    assert g["teacher_source"] == {"cached": [], "live": ["attention_scores", "hidden"]}
    assert set(g["best"]) == {"epoch", "step", "train_loss"} and g["trainable_modules"]  # no dev score; W_e, W_h
    assert gd.hash != general(seed=1).hash != general(teacher=Pretrained("bert-base-uncased")).hash
    # every term of the loss is recorded, as its mean over each part of the run, and the terms sum to the loss
    from kdlib.train import LOSS_POINTS

    for r, terms in ((g, {"embd", "hidn", "attn"}), (run(stage1), {"embd", "hidn", "attn"}), (rec, {"pred"})):
        point = r["losses"][-1]
        assert set(point) == {"step", "loss"} | terms
        assert sum(point[t] for t in terms) == pytest.approx(point["loss"], rel=1e-4)
        steps = [p["step"] for p in r["losses"]]
        assert steps == sorted(set(steps)) and len(steps) <= LOSS_POINTS + 1
    assert [p["step"] for p in g["losses"]][-1] == g["best"]["step"]  # the last point ends the run


def test_a_pretrained_teacher_has_no_logits_to_distil(store):
    with pytest.raises(KDLibError, match=r"reads the teacher's logits, and pre-trained checkpoint 'minilm-l6' has no "
                                         r"trained task head"):
        Experiment(chapter="x", task="sst2", method="kd", model=STUDENT, teacher=Pretrained("minilm-l6"), **SMOKE)
    with pytest.raises(KDLibError, match="the attention loss compares heads one by one: the student has 2 heads"):
        from kdlib.runner import run

        run(general(model=FreshBert("minilm-l6", 1, 32, 2)))


def test_the_transfer_set_comes_from_the_masked_lm_run(store):
    from kdlib.config import MaskedLM, TinyBertAugment
    from kdlib.data import synthetic_task
    from kdlib.runner import augmented, run

    mlm = Experiment(chapter="teachers", task="text", method="mlm", model=MaskedLM("minilm-l6"), epochs=1, lr=1e-3,
                     keep_model=True, evals_per_epoch=1, **SMOKE)
    aug = TinyBertAugment(mlm, p_t=0.4, k=3, n_aug=2)
    exp = Experiment(chapter="x", task="sst2", method="finetune", model=STUDENT, augment=aug, **SMOKE)
    data = synthetic_task("sst2", "train", 16)
    extra = augmented(exp, data)
    assert 0 < len(extra) <= 2 * len(data) and extra.split == "train+tinybert"
    assert all(len(a.split()) in {len(o.split()) for o in data.text_a} for a in extra.text_a)  # word for word
    assert augmented(exp, data).text_a == extra.text_a  # cached, and deterministic
    assert exp.hash != exp.replace(augment=TinyBertAugment(mlm.replace(seed=1), 0.4, 3, 2)).hash  # the MLM is in the hash
    assert run(mlm)["config"]["model"] == {"kind": "masked_lm", "checkpoint": "minilm-l6", "tune_layers": 0}
    # the rewrites without labels: the same cached transfer set, another run; the default keeps old hashes
    import dataclasses

    from kdlib.losses import UNLABELLED
    from kdlib.runner import _prepare, split_data

    bare = dataclasses.replace(aug, labels="none")
    assert "labels" not in aug.hash_dict() and bare.hash_dict()["labels"] == "none"
    assert bare.making_dict() == aug.making_dict() == aug.hash_dict()
    exp_bare = exp.replace(augment=bare)
    assert exp_bare.hash != exp.hash and augmented(exp_bare, data).text_a == extra.text_a
    n = len(split_data(exp_bare, "train"))
    copied, none = _prepare(exp, False).train_enc.labels, _prepare(exp_bare, False).train_enc.labels
    assert len(none) > n and none[:n] == copied[:n] and set(none[n:]) == {UNLABELLED} and UNLABELLED not in copied
    from kdlib.runner import unlabelled

    assert all(math.isnan(v) for v in unlabelled(synthetic_task("stsb", "train", 4)).labels)  # a score: NaN
    with pytest.raises(KDLibError, match=r"^unknown transfer-set labels 'gold'; valid choices: copied, none$"):
        TinyBertAugment(mlm, labels="gold")
    with pytest.raises(KDLibError, match="TinyBERT's augmentation needs a masked LM"):
        TinyBertAugment(exp)
    with pytest.raises(KDLibError, match=r"p_t must be in \[0, 1\], got 2"):
        TinyBertAugment(mlm, p_t=2)


def test_the_chapter_plan_holds_together_and_its_smallest_row_runs_on_smoke(store):
    from kdlib.chapters import tinybert
    from kdlib.profiles import get_profile
    from kdlib.runner import run

    cpu = tinybert.plan(get_profile("cpu"))
    assert [r for r in cpu if r.startswith("sst2")] == ["sst2 · teacher", "sst2 · labels only, random init",
                                                       "sst2 · labels only, from GD", "sst2 · KD, from GD",
                                                       "sst2 · TinyBERT"]
    main = cpu["sst2 · TinyBERT"][0]
    stage1, gd = main.model.run, main.model.run.model.run
    assert gd.task == "text" and isinstance(gd.teacher, Pretrained) and gd.keep == "last" and gd.evals_per_epoch == 0
    assert stage1.hp["stage"] == "intermediate" and main.hp["stage"] == "prediction"
    assert main.augment.mlm.method == "mlm" and main.augment == stage1.augment  # one transfer set for both stages
    student = gd.model
    assert (student.layers, student.hidden, student.heads, student.intermediate) == (2, 156, 12, 600)
    # every TinyBERT row of every task starts from the same general distillation
    assert {r[0].model.run.model.run.hash for k, r in cpu.items() if k.endswith("TinyBERT")} == {gd.hash}
    assert cpu["ablation: cola · no general distillation"][0].model.run.model == student
    assert cpu["ablation: cola · no L_pred"][0].model.run.hash == cpu["cola · TinyBERT"][0].model.run.hash  # its stage 1
    assert [e.epochs for e in (main.model.run, main)] == list(tinybert.stage_epochs(get_profile("cpu"), "sst2"))
    rec = run(tinybert.plan(get_profile("smoke"))["ablation: sst2 · no augmentation"][0])
    assert "accuracy" in rec["best"] and rec["config"]["model"]["run"]["model"]["run"]["task"] == "text"
