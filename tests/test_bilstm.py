import pytest
import torch

from kdlib import KDLibError
from kdlib.bilstm import BiLSTMClassifier


def model(pair=False, labels=2):
    torch.manual_seed(0)
    return BiLSTMClassifier(100, labels, embed_dim=16, hidden=8, fc=12, pair=pair).eval()


def test_single_sentence_shapes():
    out = model()(torch.randint(1, 100, (4, 7)))
    assert out.logits.shape == (4, 2)
    assert model(labels=1)(torch.randint(1, 100, (3, 5))).logits.shape == (3, 1)


def test_padding_does_not_change_logits():
    m = model()
    short = torch.tensor([[5, 6, 7]])
    batch = torch.tensor([[5, 6, 7, 0, 0, 0], [9, 8, 7, 6, 5, 4]])
    mask = (batch != 0).long()
    with torch.no_grad():
        alone = m(short).logits[0]
        padded = m(batch, attention_mask=mask).logits[0]
    assert torch.allclose(alone, padded, atol=1e-6)


def test_pair_shapes_and_siamese_split():
    m = model(pair=True)
    # [a a a b b pad] with token types 0 0 0 1 1 0
    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [5, 6, 8, 9, 4, 3]])
    types = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        out = m(ids, attention_mask=mask, token_type_ids=types).logits
        h_a = m.encode(torch.tensor([[5, 6, 7]]), torch.tensor([3]))
        h_b = m.encode(torch.tensor([[8, 9]]), torch.tensor([2]))
        by_hand = m.out(torch.relu(m.fc(torch.cat([h_a, h_b, h_a * h_b, (h_a - h_b).abs()], -1))))
    assert out.shape == (2, 2) and torch.allclose(out[0], by_hand[0], atol=1e-6)


def test_pair_batch_refused_by_single_sentence_model():
    with pytest.raises(KDLibError, match="sentence-pair batch was given to the single-sentence BiLSTM"):
        model()(torch.tensor([[5, 6, 7]]), token_type_ids=torch.tensor([[0, 1, 1]]))


def test_embedding_table_initialisation():
    table = torch.randn(100, 16)
    m = BiLSTMClassifier(100, 2, embed_dim=16, hidden=8, fc=12, embeddings=table)
    assert torch.equal(m.embed.weight.data, table)
    with pytest.raises(KDLibError, match=r"does not fit vocabulary 100 x dimension 32"):
        BiLSTMClassifier(100, 2, embed_dim=32, embeddings=table)


def test_runs_under_bf16_autocast_with_equal_lengths_and_one_sentence():
    """The gpu path on a CPU: the LSTM stays fp32 under autocast (oneDNN's bf16 LSTM fails without AVX-512 when
    every length in a batch is the same, as in a batch of one; CI's dry run at batch 4 found it)."""
    m = model().train()
    for ids in (torch.randint(1, 100, (4, 5)), torch.randint(1, 100, (1, 6))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(ids).logits
        out.float().sum().backward()
        assert out.shape == (len(ids), 2) and m.lstm.weight_ih_l0.grad is not None
    with torch.no_grad():  # and the same numbers as without autocast, up to bf16's rounding of the last layers
        plain = m.eval()(ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = m(ids).logits.float()
    assert torch.allclose(plain, mixed, atol=0.05)
