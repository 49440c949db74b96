"""Every loss against hand-computed golden values, plus the properties the book relies on.

Golden values: teacher logits z_t = [ln 3, 0] give p_t = [3/4, 1/4] at T = 1; student logits [0, 0] give
[1/2, 1/2]. KL(p_t || p_s) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120359. At T = 2, p_t = [√3, 1]/(√3 + 1),
KL = 0.0363407829, so T²·KL = 0.1453631315. (Computed with Python's math module, not with torch.)
"""
import math
import re

import pytest
import torch

from kdlib import KDLibError, losses

LN3 = math.log(3.0)
T_LOG = torch.tensor([[LN3, 0.0]])
S_ZERO = torch.tensor([[0.0, 0.0]])


def close(a, b, tol=1e-6):
    return abs(float(a) - b) < tol


@pytest.mark.parametrize("T,expected", [(1, 0.1308120359), (2, 0.1453631315), (4, 0.1494578650)])
def test_kd_kl_golden(T, expected):
    assert close(losses.kd_kl(S_ZERO, T_LOG, T), expected)


def test_kd_kl_is_batch_mean():
    s = torch.cat([S_ZERO, T_LOG])  # second row equals the teacher: zero loss
    t = torch.cat([T_LOG, T_LOG])
    assert close(losses.kd_kl(s, t, 1), 0.1308120359 / 2)


def test_hinton_golden_values():
    # (1 - 0.5)·CE(y=0, [1/2, 1/2]) + 0.5·KL = 0.5·ln 2 + 0.5·0.1308120359
    assert close(losses.hinton_kd(S_ZERO, T_LOG, torch.tensor([0]), T=1, alpha=0.5), 0.4119796083)
    # student [1, 0], gold 1, T = 2, alpha = 0.25: CE = ln(1 + e) = 1.3132616875, T²KL = 0.0011331535
    got = losses.hinton_kd(torch.tensor([[1.0, 0.0]]), T_LOG, torch.tensor([1]), T=2, alpha=0.25)
    assert close(got, 0.75 * 1.3132616875 + 0.25 * 0.0011331535)


def test_hinton_alpha_extremes():
    s, y = torch.tensor([[0.3, -0.2], [1.0, 2.0]]), torch.tensor([1, 0])
    t = torch.tensor([[2.0, -1.0], [0.5, 0.1]])
    assert close(losses.hinton_kd(s, t, y, T=3, alpha=0), torch.nn.functional.cross_entropy(s, y))
    assert close(losses.hinton_kd(s, t, y, T=3, alpha=1), losses.kd_kl(s, t, 3))


def test_examples_without_a_label_are_skipped_by_the_hard_terms_only():
    # rows: student [0, 0] labelled 0, and the teacher itself, unlabelled (NaN in a float64 batch, as collate makes
    # it). CE over the labelled row = ln 2; KL over both rows = 0.1308120359 / 2
    s, t = torch.cat([S_ZERO, T_LOG]), torch.cat([T_LOG, T_LOG])
    y = torch.tensor([0.0, float("nan")], dtype=losses.PARTLY_LABELLED)
    assert close(losses.hard_loss(s, y), math.log(2))
    assert close(losses.hinton_kd(s, t, y, T=1, alpha=0.5), 0.5 * math.log(2) + 0.5 * 0.1308120359 / 2)
    assert close(losses.label_smoothing_ce(s, y, 0.2), math.log(2))  # q' = [0.9, 0.1] against [1/2, 1/2]
    # regression: MSE over the labelled rows only: (1 - 0)² = 1
    y = torch.tensor([0.0, float("nan")], dtype=losses.PARTLY_LABELLED)
    assert close(losses.hard_loss(torch.tensor([[1.0], [5.0]]), y), 1.0)
    # a batch of rewrites only: the hard term is 0 (not NaN) and passes a zero gradient
    z = torch.tensor([[0.3, -0.2]], requires_grad=True)
    none = losses.hard_loss(z, torch.tensor([float("nan")], dtype=losses.PARTLY_LABELLED))
    none.backward()
    assert float(none.detach()) == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
    nan = torch.tensor([float("nan")], dtype=losses.PARTLY_LABELLED)
    assert close(losses.hinton_kd(S_ZERO, T_LOG, nan, T=1, alpha=0.5), 0.5 * 0.1308120359)
    # under vmap (seeds stacked): no data-dependent branch
    stacked = torch.func.vmap(lambda z: losses.hard_loss(z, torch.tensor([0.0, float("nan")], dtype=torch.float64)))
    assert torch.allclose(stacked(torch.stack([s, s])), torch.full((2,), math.log(2)))


def test_a_batch_marks_rows_without_a_label_only_when_it_has_some():
    from kdlib.data import Encoded, collate

    enc = Encoded([[1, 2], [3], [4]], [[0, 0], [0], [0]], [1, losses.UNLABELLED, 0], False)
    assert collate(enc, [0, 2])["labels"].dtype == torch.long  # every row labelled: the plain batch
    got = collate(enc, [0, 1])["labels"]
    assert got.dtype == losses.PARTLY_LABELLED and got[0] == 1 and torch.isnan(got[1])
    score = Encoded([[1], [2]], [[0], [0]], [2.5, float("nan")], True)
    assert collate(score, [0])["labels"].dtype == torch.float
    assert torch.isnan(collate(score, [0, 1])["labels"][1])


def test_logit_mse_golden():
    # ||[1, 2] - [0, 0]||² = 5 and ||[0, 0] - [0, 0]||² = 0, batch mean 2.5
    assert close(losses.logit_mse(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.zeros(2, 2)), 2.5)


def test_label_smoothing_golden():
    # q' = [0.9, 0.1] for eps 0.2 and two classes; -(0.9 ln 3/4 + 0.1 ln 1/4)
    assert close(losses.label_smoothing_ce(T_LOG, torch.tensor([0]), 0.2), 0.3975433013)


def test_soft_cross_entropy_golden_and_relation_to_kl():
    assert close(losses.soft_cross_entropy(S_ZERO, T_LOG, 2), math.log(2))
    s, t = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.randn(5, 3)
    p_t = torch.softmax(t / 2, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    assert close(losses.soft_cross_entropy(s, t, 2), losses.kd_kl(s, t, 2) / 4 + entropy, 1e-5)


def test_zero_when_student_equals_teacher():
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    for T in (0.5, 1, 4, 20):
        assert abs(losses.kd_kl(z, z, T).item()) < 1e-6
        assert abs(losses.kd_kl(z + 7.0, z, T).item()) < 1e-5  # softmax ignores a constant shift
    assert losses.logit_mse(z, z).item() == 0


def test_kl_is_positive_when_they_differ():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
    assert losses.kd_kl(s, t, 2).item() > 0


def _grad_norm(T, with_t2):
    g = torch.Generator().manual_seed(3)
    s = torch.randn(32, 2, generator=g).requires_grad_(True)
    t = torch.randn(32, 2, generator=g) * 3
    loss = losses.kd_kl(s, t, T)
    (loss if with_t2 else loss / T**2).backward()
    return s.grad.norm().item()


def test_t_squared_keeps_gradient_scale():
    plain = [_grad_norm(T, False) for T in (1, 4, 16)]
    scaled = [_grad_norm(T, True) for T in (1, 4, 16)]
    assert plain[1] / plain[0] < 0.2 and plain[2] / plain[1] < 0.1  # falls roughly as 1/T²
    assert 0.3 < scaled[2] / scaled[0] < 3  # stays of the same order


def test_high_temperature_limit_is_logit_matching():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(64, 3, generator=g).double(), torch.randn(64, 3, generator=g).double()
    c = lambda z: z - z.mean(-1, keepdim=True)
    limit = losses.logit_mse(c(s), c(t)) / (2 * 3)
    assert abs(losses.kd_kl(s, t, 200).item() / limit.item() - 1) < 1e-3


def test_regression_kd_uses_mse():
    s, t, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [2.0]]), torch.tensor([3.0, 2.0])
    # hard: mean((1-3)², (2-2)²) = 2; soft: mean(1, 0) = 0.5
    assert close(losses.hinton_kd(s, t, y, T=1, alpha=0.5), 0.5 * 2 + 0.5 * 0.5)


def test_conventions_relations():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    conv = {k: v.item() for k, (_, v) in losses.kd_scaling_conventions(s, t, 2).items()}
    assert close(conv["Patient KD code"], conv["this book, Hinton et al."] / 4)
    assert close(conv["TinyBERT"], conv["TextBrewer"] / 4)


@pytest.mark.parametrize("T", [0, -1, -0.5])
def test_bad_temperature(T):
    with pytest.raises(KDLibError, match=rf"temperature T must be a finite number > 0, got {T}"):
        losses.kd_kl(S_ZERO, T_LOG, T)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_bad_alpha(alpha):
    with pytest.raises(KDLibError, match=r"alpha must be in \[0, 1\]"):
        losses.hinton_kd(S_ZERO, T_LOG, torch.tensor([0]), T=2, alpha=alpha)


# --- TinyBERT ------------------------------------------------------------------------------------------
# Golden values by hand. Hidden: one sentence of two tokens, the second padding; student [1, 2] against
# teacher [0, 0] on the real token gives (1 + 4) / 2 = 2.5, whatever the padded token holds. Attention: one
# head, scores S = [[1, 5], [7, 9]] against A = [[0, 2], [3, 4]]: with both tokens real the mean of
# 1, 9, 16, 25 is 12.75; with the second token padded only the pair (0, 0) counts: 1. A second head that
# matches exactly halves the loss (the mean over heads).
def test_tinybert_hidden_golden_and_padding_left_out():
    s = torch.tensor([[[1.0, 2.0], [100.0, -100.0]]])
    t = torch.zeros(1, 2, 2)
    assert close(losses.tinybert_hidden(s, t, torch.tensor([[1, 0]])), 2.5)
    assert close(losses.tinybert_hidden(s, t, torch.tensor([[1, 1]])), (1 + 4 + 10000 + 10000) / 4)
    with pytest.raises(KDLibError, match=r"project the student's to the teacher's width first"):
        losses.tinybert_hidden(torch.zeros(1, 2, 3), t, torch.tensor([[1, 1]]))


def test_tinybert_attention_golden_and_padding_left_out():
    S = torch.tensor([[[[1.0, 5.0], [7.0, 9.0]]]])
    A = torch.tensor([[[[0.0, 2.0], [3.0, 4.0]]]])
    assert close(losses.tinybert_attention(S, A, torch.tensor([[1, 1]])), 12.75)
    assert close(losses.tinybert_attention(S, A, torch.tensor([[1, 0]])), 1.0)
    two_heads_s, two_heads_a = torch.cat([S, A], dim=1), torch.cat([A, A], dim=1)
    assert close(losses.tinybert_attention(two_heads_s, two_heads_a, torch.tensor([[1, 1]])), 12.75 / 2)
    with pytest.raises(KDLibError, match=r"the student needs the teacher's number of heads \(2\)"):
        losses.tinybert_attention(S, two_heads_a, torch.tensor([[1, 1]]))


def test_tinybert_attention_is_zero_for_a_student_that_copies_the_teacher():
    """A student that copies the teacher's layers has the teacher's attention scores: L_attn = 0."""
    from kdlib.models import capture_attention_scores, fresh_student

    teacher = fresh_student(200, 2, layers=2, hidden=32, heads=4, seed=0).eval()
    ids = torch.tensor([[101, 7, 8, 102, 0], [101, 9, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad(), capture_attention_scores(teacher) as got_t:
        teacher(input_ids=ids, attention_mask=mask)
    student = fresh_student(200, 2, layers=2, hidden=32, heads=4, seed=1).eval()
    student.load_state_dict(teacher.state_dict())  # copies every teacher layer
    uncopied = fresh_student(200, 2, layers=2, hidden=32, heads=4, seed=1).eval()
    with torch.no_grad(), capture_attention_scores(uncopied) as got_u:
        uncopied(input_ids=ids, attention_mask=mask)
    with torch.no_grad(), capture_attention_scores(student) as got_s:
        student(input_ids=ids, attention_mask=mask)
    assert len(got_s) == len(got_t) == 2
    for a_s, a_t, a_u in zip(got_s, got_t, got_u):
        assert losses.tinybert_attention(a_s, a_t, mask).item() == 0.0
        assert losses.tinybert_attention(a_u, a_t, mask).item() > 0.0


def test_tinybert_prediction_golden():
    # -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2 against the uniform student, batch mean
    assert close(losses.tinybert_prediction(S_ZERO, T_LOG), math.log(2))
    assert close(losses.tinybert_prediction(torch.tensor([[1.0]]), torch.tensor([[3.0]])), 4.0)  # STS-B: MSE


def test_tinybert_objective_trains_its_projections_and_reads_a_live_teacher(store):
    """Intermediate-stage TinyBERT on the smoke profile: a narrower fresh student with the teacher's heads,
    W_e and W_h trained with it, the teacher's hidden states and attention scores read live."""
    from kdlib.config import Experiment, FreshBert
    from kdlib.methods import make_objective
    from kdlib.runner import run

    base = dict(chapter="test", profile="smoke", task="sst2", data="synthetic", train_size=48, dev_size=16,
                epochs=1, lr=1e-3, batch_size=16, max_length=20, seed=0)
    teacher = Experiment(method="finetune", model=FreshBert("minilm-l6", 2, 48, 4), chapter="teachers",
                         keep_model=True, **{k: v for k, v in base.items() if k != "chapter"})
    student = Experiment(method="tinybert", model=FreshBert("minilm-l6", 1, 24, 4), teacher=teacher,
                         hparams={"stage": "all"}, **base)
    rec = run(student)
    assert rec["history"] and 0 <= rec["best"]["accuracy"] <= 100 and rec["teacher"]["hash"] == teacher.hash
    obj = make_objective("tinybert", {"stage": "prediction"})
    assert obj.teacher_quantities == ("logits",) and obj.build_modules(None) == {}
    with pytest.raises(KDLibError, match=r"the student has 2 heads, the teacher 4; give the student 4 heads"):
        run(student.replace(model=FreshBert("minilm-l6", 1, 24, 2)))
    with pytest.raises(KDLibError, match=r"unknown TinyBERT stage 'both'; valid choices: intermediate, prediction, all"):
        make_objective("tinybert", {"stage": "both"})


def test_tinybert_terms_reach_the_projections():
    """Every intermediate term is positive for an untrained student and its gradient reaches W_e and W_h."""
    from kdlib.methods import make_objective
    from kdlib.models import fresh_student
    from kdlib.teachers import forward_quantities

    obj = make_objective("tinybert", {"stage": "intermediate"})
    student = fresh_student(100, 2, layers=1, hidden=24, heads=4, seed=0)
    teacher = fresh_student(100, 2, layers=2, hidden=48, heads=4, seed=1).eval()
    obj.modules = torch.nn.ModuleDict(obj.build_modules(student, teacher.config))
    inputs = {"input_ids": torch.tensor([[1, 5, 6, 2, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])}
    with torch.no_grad():
        t = forward_quantities(teacher, inputs, ("hidden", "attention_scores"))
    batch = {"attention_mask": inputs["attention_mask"], "teacher_hidden": t["hidden"],
             "teacher_attention_scores": t["attention_scores"]}
    terms = obj.terms(obj.forward(student, inputs), batch)
    assert set(terms) == {"embd", "hidn", "attn"} and all(v.item() > 0 for v in terms.values())
    assert obj.layer_map(1, 2).pairs == ((0, 0), (1, 2))
    sum(terms.values()).backward()
    for name in ("proj_embd", "proj_hidn"):
        assert obj.modules[name].weight.grad.abs().sum() > 0, name
    no_embd = make_objective("tinybert", {"embd": 0.0})
    no_embd.modules = obj.modules
    assert no_embd.terms(no_embd.forward(student, inputs), batch)["embd"].item() == 0.0


# --- Annealing KD -------------------------------------------------------------------------------------
def test_annealing_phi_and_loss_golden():
    assert losses.annealing_phi(7, 7) == pytest.approx(1 / 7) and losses.annealing_phi(1, 7) == 1.0
    assert losses.annealing_phi(4, 14) == pytest.approx(1 - 3 / 14)
    s, t = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[7.0, 0.0], [7.0, 7.0]])
    # Φ(7) = 1/7: targets [1, 0] and [1, 1]; squared distances 4 and 2, batch mean 3
    assert close(losses.annealing_kd(s, t, 7, 7), 3.0)
    assert close(losses.annealing_kd(s, t, 1, 7), ((1 - 7) ** 2 + 2 ** 2 + 49 + 49) / 2)  # Φ(1) = 1: the teacher
    assert close(losses.annealing_kd(s, t, 1, 7), losses.logit_mse(s, t))


def test_annealing_schedule_visits_tau_max_down_to_1_in_equal_shares():
    assert [losses.annealing_schedule(i, 14, 7) for i in range(14)] == [7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert [losses.annealing_schedule(i, 10, 3) for i in range(10)] == [3, 3, 3, 3, 2, 2, 2, 1, 1, 1]
    assert [losses.annealing_schedule(i, 3, 7) for i in range(3)] == [7, 5, 3]  # fewer steps than values


@pytest.mark.parametrize("call, message", [
    (lambda: losses.annealing_phi(1, 0), "tau_max must be an integer >= 1, got 0"),
    (lambda: losses.annealing_phi(2.5, 7), "T must be an integer >= 1, got 2.5"),
    (lambda: losses.annealing_phi(8, 7), "T must be in 1..tau_max = 7, got 8"),
    (lambda: losses.annealing_schedule(0, 10, 1.5), "tau_max must be an integer >= 1, got 1.5"),
])
def test_annealing_bad_input(call, message):
    with pytest.raises(KDLibError, match=re.escape(message)):
        call()


def test_kd_divergence_is_the_kl_over_classes_and_the_mse_of_one_score():
    """MATE-KD's divergence: on STS-B's single output a softmax is always 1 and the KL always 0, so the MSE of the
    scores stands for it (as Hinton's loss takes it there)."""
    s, t = torch.tensor([[0.5], [2.0]]), torch.tensor([[1.5], [1.0]])
    assert close(losses.kd_divergence(s, t, 2.0), 1.0)  # ((0.5 − 1.5)² + (2 − 1)²) / 2
    assert losses.kd_kl(s, t, 2.0).item() == 0.0  # what the KL alone would have given
    assert close(losses.kd_divergence(S_ZERO, T_LOG, 2.0), losses.kd_kl(S_ZERO, T_LOG, 2.0))


def test_label_smoothing_on_a_regression_task_is_one_line():
    from kdlib.config import Experiment, LayerCopy
    from kdlib.errors import KDLibError

    with pytest.raises(KDLibError, match="method 'label_smoothing' needs class labels, and task 'stsb' is a "
                                         "regression; valid choices: a classification task"):
        Experiment(chapter="x", profile="smoke", task="stsb", method="label_smoothing",
                   model=LayerCopy("minilm-l6", (0,)), hparams={"epsilon": 0.1})
