import pytest
import torch

from kdlib.data import encode, synthetic_task
from kdlib.methods import FineTune
from kdlib.models import fresh_student, load_tokenizer
from kdlib.steps import OptimArgs
from kdlib.train import TrainArgs, train


@pytest.fixture(scope="module")
def data():
    tok = load_tokenizer("minilm-l6")
    return (encode(tok, synthetic_task("sst2", "train", 96), 24), encode(tok, synthetic_task("sst2", "dev", 32), 24),
            len(tok))


class Killed(Exception):
    pass


class DiesInEpoch2(FineTune):
    def on_epoch_start(self, epoch, epochs):
        if epoch == 1:
            raise Killed


def _step(vocab, objective=None, lr=1e-3, seed=0):
    torch.manual_seed(seed)
    return (objective or FineTune()).make_step(fresh_student(vocab, 2, 1, 32, 2), OptimArgs(lr=lr))


def test_killed_run_resumes_where_it_stopped(data, tmp_path):
    train_enc, dev_enc, vocab = data
    args = TrainArgs(epochs=2, batch_size=16, evals_per_epoch=2, seed=0)
    whole = train(_step(vocab), train_enc, dev_enc, "sst2", args, state_dir=tmp_path / "a", progress=False)
    with pytest.raises(Killed):
        train(_step(vocab, DiesInEpoch2()), train_enc, dev_enc, "sst2", args, state_dir=tmp_path / "b",
              progress=False)
    assert (tmp_path / "b" / "latest").read_text().strip() == "epoch-0"
    resumed = train(_step(vocab), train_enc, dev_enc, "sst2", args, state_dir=tmp_path / "b", progress=False)
    assert [p["epoch"] for p in resumed.history] == [0.5, 1.0, 1.5, 2.0]
    assert whole.history == [{**p} for p in resumed.history]  # the same run, bit for bit
    assert torch.equal(whole.best_dev_logits, resumed.best_dev_logits)


def test_training_is_deterministic_and_learns(data):
    train_enc, dev_enc, vocab = data
    args = TrainArgs(epochs=3, batch_size=16, seed=1)
    runs = [train(_step(vocab, lr=2e-3, seed=1), train_enc, dev_enc, "sst2", args, progress=False) for _ in range(2)]
    assert runs[0].history == runs[1].history
    assert runs[0].history[-1]["train_loss"] < runs[0].history[0]["train_loss"] or runs[0].best["accuracy"] > 60
    assert torch.equal(runs[0].best_dev_logits, runs[1].best_dev_logits)


def test_without_evaluation_the_last_state_is_kept(data):
    train_enc, dev_enc, vocab = data
    res = train(_step(vocab), train_enc, None, "sst2", TrainArgs(epochs=1, batch_size=16, evals_per_epoch=0,
                                                                   keep="last"), keep_weights=True, progress=False)
    assert len(res.history) == 1 and "accuracy" not in res.history[0] and res.best_state is not None
    from kdlib import KDLibError

    with pytest.raises(KDLibError, match="keep='best' needs dev evaluations"):
        train(_step(vocab), train_enc, None, "sst2", TrainArgs(epochs=1, evals_per_epoch=0), progress=False)


def test_peak_memory_sees_what_a_run_holds_for_a_moment():
    """On a CPU the process's resident set is sampled while the run lasts: 200 MB held for half a second show."""
    import time

    import psutil
    import torch

    from kdlib.train import PeakMemory

    before = psutil.Process().memory_info().rss / 2 ** 20
    with PeakMemory("cpu", every=0.05) as mem:
        big = torch.ones(200 * 2 ** 20 // 4)  # 200 MB of float32, touched
        time.sleep(0.5)
        del big
    rec = mem.record()
    assert rec["device"] == "cpu" and rec["what"] == "process RSS"
    assert rec["mb"] >= before + 150
