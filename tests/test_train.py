import pytest
import torch

from kdlib.data import encode, synthetic_task
from kdlib.methods import FineTune
from kdlib.models import fresh_student, load_tokenizer
from kdlib.train import TrainArgs, train


@pytest.fixture(scope="module")
def data():
    tok = load_tokenizer("minilm-l6")
    return (encode(tok, synthetic_task("sst2", "train", 96), 24), encode(tok, synthetic_task("sst2", "dev", 32), 24),
            len(tok))


class Killed(Exception):
    pass


class DiesInEpoch2(FineTune):
    def __init__(self):
        self.epoch = 0

    def on_epoch_start(self, epoch, epochs):
        self.epoch = epoch

    def loss(self, out, batch):
        if self.epoch == 1:
            raise Killed
        return super().loss(out, batch)


def test_killed_run_resumes_where_it_stopped(data, tmp_path):
    train_enc, dev_enc, vocab = data
    args = TrainArgs(epochs=2, lr=1e-3, batch_size=16, evals_per_epoch=2, seed=0)
    whole = train(fresh_student(vocab, 2, 1, 32, 2, seed=0), train_enc, dev_enc, "sst2", FineTune(), args,
                  state_dir=tmp_path / "a", progress=False)
    with pytest.raises(Killed):
        train(fresh_student(vocab, 2, 1, 32, 2, seed=0), train_enc, dev_enc, "sst2", DiesInEpoch2(), args,
              state_dir=tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "last.pt").is_file()
    resumed = train(fresh_student(vocab, 2, 1, 32, 2, seed=0), train_enc, dev_enc, "sst2", FineTune(), args,
                    state_dir=tmp_path / "b", progress=False)
    assert [p["epoch"] for p in resumed.history] == [0.5, 1.0, 1.5, 2.0]
    for a, b in zip(whole.history, resumed.history):  # the same run, bit for bit
        assert a["accuracy"] == b["accuracy"] and a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)


def test_training_is_deterministic_and_learns(data):
    train_enc, dev_enc, vocab = data
    args = TrainArgs(epochs=3, lr=2e-3, batch_size=16, seed=1)
    runs = [train(fresh_student(vocab, 2, 1, 32, 2, seed=1), train_enc, dev_enc, "sst2", FineTune(), args,
                  progress=False) for _ in range(2)]
    assert runs[0].history == runs[1].history
    assert runs[0].history[-1]["train_loss"] < runs[0].history[0]["train_loss"] or \
        runs[0].best["accuracy"] > 60
    assert torch.equal(runs[0].best_dev_logits, runs[1].best_dev_logits)
