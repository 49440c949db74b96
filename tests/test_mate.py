"""MATE-KD: a masked-LM generator rewrites sentences to make the teacher and the student disagree; the student
learns on clean and rewritten text. Its generator is kdlib's masked LM, a run named in the hyper-parameters."""
import pytest
import torch

from kdlib.config import Experiment, LayerCopy, MaskedLM, Pretrained
from kdlib.errors import KDLibError
from kdlib.methods import make_objective

SMOKE = dict(profile="smoke", data="synthetic", train_size=64, dev_size=32, max_length=32, batch_size=16)


def mlm(**kw):
    return Experiment(chapter="teachers", task="text", method="mlm", model=MaskedLM("minilm-l6"), epochs=1, lr=1e-3,
                      keep_model=True, evals_per_epoch=1, **{**SMOKE, **kw})


def teacher():
    return Experiment(chapter="teachers", task="sst2", method="finetune", model=Pretrained("minilm-l6"), epochs=1,
                      lr=1e-4, keep_model=True, **SMOKE)


def test_mate_kd_trains_both_players_on_smoke(store):
    from kdlib.runner import run

    hp = {"generator": mlm(), "generator_steps": 1, "student_steps": 2, "generator_lr": 1e-3}
    e = Experiment(chapter="mate", task="sst2", method="mate", model=LayerCopy("minilm-l6", (0,)), teacher=teacher(),
                   hparams=hp, epochs=2, lr=1e-3, evals_per_epoch=1, **SMOKE)
    rec = run(e)
    assert rec["config"]["hparams"]["generator"]["hash"] == mlm().hash  # the generator's start, by hash
    assert e.hash != e.replace(hparams={**hp, "generator": mlm(seed=1)}).hash
    assert rec["teacher_source"] == {"cached": ["logits"], "live": []} and "accuracy" in rec["best"]
    points = rec["losses"]  # a point of a generator step alone has no student loss (it was not measured)
    assert all("divergence" in p for p in points) and 2 * sum("loss" in p for p in points) >= len(points)
    assert rec["trainable_modules"]["generator"] > 20_000_000  # the masked LM, whole
    ex = rec["examples"]["examples"]  # dev examples rewritten by the generator as training left it
    assert len(ex) == 8 and all(r["changed"] >= 1 for r in ex)
    assert any(r["clean"] != r["rewritten"] for r in ex) and all("[SEP]" not in r["clean"] for r in ex)
    assert all(abs(sum(r[k]) - 1) < 1e-3 for r in ex for k in ("teacher_clean", "student_rewritten"))
    assert rec["examples"]["kl_clean"] >= 0 and rec["examples"]["kl_rewritten"] >= 0
    assert "examples" not in run(teacher())  # only an objective that records examples adds the field


def test_a_generator_step_increases_the_divergence(store):
    """On a fixed batch and fixed Gumbel noise, one generator update (lr 1e-2, ascending) raises the teacher–
    student divergence it is trained to raise."""
    from kdlib.data import encode, synthetic_task
    from kdlib.models import load_tokenizer
    from kdlib.runner import load_run_weights, teacher_model
    from kdlib.steps import OptimArgs, make_optimizer
    from kdlib.teachers import LiveTeacher
    from kdlib.train import make_loader

    tok = load_tokenizer("minilm-l6")
    obj = make_objective("mate", {"generator": mlm(), "mask_rate": 0.5})
    obj.use_tokenizer(tok)
    gen, live = load_run_weights(mlm()), LiveTeacher(teacher_model(teacher()), ())
    from kdlib.models import student_from_teacher

    torch.manual_seed(0)
    student = student_from_teacher("minilm-l6", [0], 2).eval()
    gen.train()
    batch = next(iter(make_loader(encode(tok, synthetic_task("sst2", "train", 16), 32), 16, False)))

    def divergence():
        torch.manual_seed(3)  # the same positions and Gumbel noise each time
        chosen, one_hots = obj.rewrite(gen, batch)
        return obj.divergence(student, live, batch, chosen, one_hots, grad_to_inputs=True)

    opt = make_optimizer(list(gen.named_parameters()), OptimArgs(lr=1e-2, weight_decay=0.0, maximize=True))
    before = divergence()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = divergence()
    assert after.item() > before.item()


def test_bad_mate_settings_are_one_line():
    with pytest.raises(KDLibError, match="MATE-KD needs a generator: give generator=masked_lm"):
        make_objective("mate", {})
    with pytest.raises(KDLibError, match=r"mask_rate must be in \(0, 1\), got 1.0"):
        make_objective("mate", {"generator": mlm(), "mask_rate": 1.0})
    with pytest.raises(KDLibError, match="generator_steps must be an integer >= 1, got 0"):
        make_objective("mate", {"generator": mlm(), "generator_steps": 0})


def test_a_generator_with_another_vocabulary_is_refused():
    from transformers import BertConfig, BertForMaskedLM

    from kdlib.models import student_from_teacher

    obj = make_objective("mate", {"generator": mlm()})
    obj.from_runs = {"generator": BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1,
                                                             num_attention_heads=2, intermediate_size=8))}
    with pytest.raises(KDLibError, match="vocabularies differ \\(generator 100, student 30522\\); the generator, the "
                                         "teacher and the student must share one"):
        obj.build_modules(student_from_teacher("minilm-l6", [0], 2))


def test_the_chapter_plan_holds_together():
    from kdlib.chapters import annealing, mate
    from kdlib.chapters import masked_lm
    from kdlib.profiles import get_profile

    p = get_profile("cpu")
    cpu = mate.plan(p)
    assert [r for r in cpu if r.startswith("cola")] == ["cola · teacher", "cola · labels only", "cola · KD",
                                                       "cola · KD on masked-LM rewrites", "cola · MATE-KD"]
    assert cpu["cola · KD"][2].hash == annealing.plan(p)["cola · KD"][2].hash  # the same student, one record
    m = cpu["sst2 · MATE-KD"][0]
    assert m.hp["generator"].hash == masked_lm(p).hash == cpu["sst2 · KD on masked-LM rewrites"][0].augment.mlm.hash
    assert cpu["sst2 · KD on masked-LM rewrites"][0].augment.labels == "none"  # as MATE-KD's rewrites: teacher only


def test_rewritten_embeddings_under_bf16_autocast():
    """On a GPU the one-hot × table product runs in bf16 under autocast; the rewritten rows must still land in the
    float32 embeddings (found by the gpu dry run: masked_scatter refused mixed dtypes)."""
    from kdlib.mlm import embed_rewritten

    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[1, 2, 3]])
    chosen = torch.tensor([[False, True, False]])
    one_hot = torch.nn.functional.one_hot(torch.tensor([7]), 10).float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = embed_rewritten(emb, ids, chosen, one_hot)
    assert out.dtype == torch.float32 and torch.allclose(out[0, 1], emb.weight[7], atol=1e-2)
    out.sum().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0
