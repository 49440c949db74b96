"""Layer mappings (PKD-Skip, PKD-Last, given lists), the PKD and ALP losses, and layer-copied students."""
import math

import pytest
import torch

from kdlib import KDLibError, losses, mapping


@pytest.mark.parametrize("kind,s,t,teacher_layers", [
    ("skip", 6, 12, [2, 4, 6, 8, 10]),  # Sun et al.'s PKD-Skip, 12 → 6
    ("last", 6, 12, [7, 8, 9, 10, 11]),  # PKD-Last
    ("skip", 3, 6, [2, 4]),
    ("last", 3, 6, [4, 5]),
    ("skip", 2, 6, [3]),
    ("last", 2, 6, [5]),
])
def test_fixed_mappings(kind, s, t, teacher_layers):
    m = mapping.make(kind, s, t)
    assert m.teacher_layers == teacher_layers and m.student_layers == list(range(1, s))
    assert m.matrix().sum() == s - 1


def test_given_mapping_and_matrix():
    m = mapping.given([(0, 0), (2, 6)], 2, 6)
    assert m.pairs == ((0, 0), (2, 6)) and m.matrix()[2, 6] == 1 and m.matrix().sum() == 2


@pytest.mark.parametrize("call,msg", [
    (lambda: mapping.given([(1, 7)], 3, 6), "teacher layer 7 is out of range; valid layers: 0..6"),
    (lambda: mapping.given([(4, 2)], 3, 6), "student layer 4 is out of range; valid layers: 0..3"),
    (lambda: mapping.given([(1, 2), (1, 3)], 3, 6), "student layer 1 is mapped twice"),
    (lambda: mapping.make("diagonal", 3, 6),
     "unknown layer mapping 'diagonal'; valid choices: skip, last, uniform, top, bottom, given"),
    (lambda: mapping.uniform(4, 6), r"a uniform map needs the teacher's depth \(6\) to be a multiple of the student's \(4\)"),
    (lambda: mapping.top(7, 6), "a student of 7 layers is deeper than its teacher of 6"),
    (lambda: mapping.skip(8, 6), "a student of 8 layers is deeper than its teacher of 6"),
])
def test_bad_mappings(call, msg):
    with pytest.raises(KDLibError, match=msg):
        call()


def test_draw_fixed_and_learned(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    ax = mapping.draw(mapping.skip(3, 6))
    assert ax.get_xlabel() == "teacher layer" and len(ax.get_yticks()) == 3
    ax = mapping.draw(torch.softmax(torch.randn(2, 6), -1).numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4", "5", "6"]


# --- losses: golden values ------------------------------------------------------------------------------
S = torch.tensor([[[3.0, 4.0], [0.0, 2.0]], [[1.0, 0.0], [1.0, 0.0]]])
T_ = torch.tensor([[[1.0, 0.0], [0.0, 5.0]], [[-1.0, 0.0], [0.0, 1.0]]])


def test_pkd_patient_golden():
    # H = 2, two mapped layers, a mean over both (the official code's F.mse_loss). Example 1:
    # |(.6,.8) − (1,0)|²/2 = 0.4 and 0, mean 0.2; example 2: 4/2 = 2 and 2/2 = 1, mean 1.5; batch mean 0.85
    assert losses.pkd_patient(S, T_).item() == pytest.approx(0.85)
    assert losses.pkd_patient(S, 7 * S).item() == pytest.approx(0, abs=1e-6)  # scale-blind, zero when equal


def test_pkd_total_golden():
    z_s, z_t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    kd = losses.hinton_kd(z_s, z_t, y, T=5.0, alpha=0.5).item()
    got = losses.pkd(z_s, z_t, y, S[:1], T_[:1], T=5.0, alpha=0.5, beta=10.0).item()
    assert got == pytest.approx(kd + 10 * 0.2)
    with pytest.raises(KDLibError, match="beta must be >= 0, got -1"):
        losses.pkd(z_s, z_t, y, S[:1], T_[:1], beta=-1)


def test_alp_weights_golden_and_rows_sum_to_one():
    s, t = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    w = losses.alp_weights(s, t, scaled=False)
    assert w[0, 0].tolist() == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1)])
    assert losses.alp_weights(s, t, scaled=True)[0, 0, 0].item() == pytest.approx(1 / (1 + math.exp(-1 / math.sqrt(2))))
    g = torch.Generator().manual_seed(0)
    w = losses.alp_weights(torch.randn(4, 3, 8, generator=g), torch.randn(4, 6, 8, generator=g))
    assert w.shape == (4, 3, 6) and torch.allclose(w.sum(-1), torch.ones(4, 3))
    # the mapping module's soft map is the same attention; unscaled scores of large states are one-hot
    assert torch.equal(mapping.attention(s, t, scaled=False), losses.alp_weights(s, t, scaled=False))
    big = mapping.attention(10 * torch.randn(2, 2, 384, generator=g), 10 * torch.randn(2, 6, 384, generator=g),
                            scaled=False)
    assert big.max(-1).values.min() > 0.999


def test_alp_loss_golden():
    s, t = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # c = (0.731, 0.269); MSE over 2 hidden units = 0.2689²
    assert losses.alp_loss(s, t, scaled=False).item() == pytest.approx((1 / (math.e + 1)) ** 2)
    same = torch.tensor([[[2.0, 0.0]]])
    assert losses.alp_loss(same, same).item() == 0  # one teacher layer equal to the student's: nothing to learn
    with pytest.raises(KDLibError, match="student hidden size 3 differs from the teacher's 2"):
        losses.alp_loss(torch.ones(1, 1, 3), t)


def test_alp_kd_weights():
    z_s, z_t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    s, t = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    parts = (losses.hard_loss(z_s, y).item(), losses.kd_kl(z_s, z_t, 2.0).item(), losses.alp_loss(s, t).item())
    got = losses.alp_kd(z_s, z_t, y, s, t, T=2.0, beta=0.5, eta=2.0, lam=3.0).item()
    assert got == pytest.approx(0.5 * parts[0] + 2 * parts[1] + 3 * parts[2])
    with pytest.raises(KDLibError, match="lam must be >= 0, got -0.5"):
        losses.alp_kd(z_s, z_t, y, s, t, lam=-0.5)


def test_student_copied_from_teacher_layers_reproduces_them():
    """Before training, a student made of the teacher's first k layers computes exactly their hidden states."""
    from kdlib.models import load_classifier, load_tokenizer, student_from_teacher

    tok = load_tokenizer("minilm-l6")
    batch = tok(["a gripping, funny film", "dull"], padding=True, return_tensors="pt")
    teacher = load_classifier("minilm-l6", 2).eval()
    student = student_from_teacher("minilm-l6", (0, 1, 2), 2).eval()
    with torch.no_grad():
        h_t = teacher(**batch, output_hidden_states=True).hidden_states
        h_s = student(**batch, output_hidden_states=True).hidden_states
    assert len(h_s) == 4
    for k in range(4):
        assert torch.equal(h_s[k], h_t[k])


# --- objectives on real model outputs --------------------------------------------------------------------
def _batch_and_outputs(student_layers=(0, 1, 2)):
    from kdlib.models import load_classifier, load_tokenizer, student_from_teacher
    from kdlib.train import predict, make_loader
    from kdlib.data import encode, synthetic_task

    tok = load_tokenizer("minilm-l6")
    enc = encode(tok, synthetic_task("sst2", "train", 6), 24)
    teacher = load_classifier("minilm-l6", 2)
    logits, got = predict(teacher, make_loader(enc, 4, False), quantities=("cls",))
    cls = got["cls"]
    assert cls.shape == (6, 7, 384) and cls.dtype == torch.float32  # the teacher-output cache stores float16
    student = student_from_teacher("minilm-l6", student_layers, 2)
    batch = next(iter(make_loader(enc, 6, False)))
    idx = batch.pop("idx")
    out = student(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}, output_hidden_states=True)
    batch.update(teacher_logits=logits[idx], teacher_cls=cls[idx].float())
    return out, batch


def test_pkd_and_alp_objectives_on_real_hidden_states():
    from kdlib.methods import make_objective

    out, batch = _batch_and_outputs()
    pkd = make_objective("pkd", {"T": 5.0, "alpha": 0.5, "beta": 10.0, "mapping": "skip"})
    loss = pkd.loss(out, batch)
    assert pkd.layer_map(3, 6).teacher_layers == [2, 4] and loss.item() > 0 and loss.requires_grad
    kd_only = losses.hinton_kd(out.logits, batch["teacher_logits"], batch["labels"], 5.0, 0.5)
    assert make_objective("pkd", {"beta": 0.0, "T": 5.0}).loss(out, batch).item() == pytest.approx(kd_only.item(), rel=1e-6)
    alp = make_objective("alp", {"lam": 1.0})
    assert alp.loss(out, batch).item() > 0
    with pytest.raises(KDLibError, match="unknown PKD layer mapping 'first'; valid choices: skip, last"):
        make_objective("pkd", {"mapping": "first"})
    with pytest.raises(KDLibError, match="beta must be >= 0, got -2"):
        make_objective("pkd", {"beta": -2})


def test_model_without_hidden_states_is_refused():
    from transformers.modeling_outputs import SequenceClassifierOutput

    from kdlib.methods import make_objective

    _, batch = _batch_and_outputs()
    bare = SequenceClassifierOutput(logits=batch["teacher_logits"].clone())
    with pytest.raises(KDLibError, match="the model returned no hidden states"):
        make_objective("pkd").loss(bare, batch)


def test_tinybert_maps_include_the_embeddings():
    """TinyBERT's uniform map covers the embedding layer (0 → 0) and ends at the teacher's last layer."""
    assert mapping.uniform(3, 6).pairs == ((0, 0), (1, 2), (2, 4), (3, 6))
    assert mapping.uniform(4, 12).pairs == ((0, 0), (1, 3), (2, 6), (3, 9), (4, 12))  # TinyBERT4 of BERT-base
    assert mapping.top(3, 6).pairs == ((0, 0), (1, 4), (2, 5), (3, 6))
    assert mapping.bottom(2, 6).pairs == ((0, 0), (1, 1), (2, 2))
    assert mapping.make("uniform", 2, 6).teacher_layers == [0, 3, 6]
    assert mapping.given([(0, 0), (1, 2), (2, 4), (3, 6)], 3, 6).student_layers == [0, 1, 2, 3]
