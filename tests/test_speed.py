import json

import pytest

import kdlib.speed as sp
from kdlib import KDLibError
from kdlib.config import BiLSTM, Experiment, FreshBert
from kdlib.bilstm import BiLSTMClassifier
from kdlib.data import encode, synthetic_task
from kdlib.models import fresh_student, load_tokenizer
from kdlib.chapters import size_speed as size_speed_record
from kdlib.speed import size_speed


def test_size_speed_rows_and_ratios():
    tok = load_tokenizer("minilm-l6")
    enc = encode(tok, synthetic_task("sst2", "train", 64), 24)
    big = fresh_student(len(tok), 2, layers=2, hidden=64, heads=2)
    small = BiLSTMClassifier(len(tok), 2, embed_dim=16, hidden=8, fc=8)
    rows = size_speed({"bert": big, "bilstm": small}, {"bert": enc, "bilstm": enc}, reference="bert", batch_size=32)
    by = {r["model"]: r for r in rows}
    assert by["bert"]["fewer params ×"] == 1 and by["bert"]["faster ×"] == 1
    assert by["bilstm"]["params"] < by["bert"]["params"] and by["bilstm"]["fewer params ×"] > 1
    assert all(r["seconds"] > 0 for r in rows)


def _models():
    base = dict(chapter="test", profile="smoke", task="sst2", method="finetune", data="synthetic", train_size=48,
                dev_size=16, max_length=24)
    return {"bert": Experiment(model=FreshBert("minilm-l6", 1, 32, 2), **base),
            "bilstm": Experiment(model=BiLSTM("minilm-l6", 8, 8, "random"), **base)}


def test_measure_stores_a_record_and_reloads_it(store, monkeypatch):
    assert size_speed_record("test", _models(), "bert", batch_size=16, stored_only=True) is None
    rec = size_speed_record("test", _models(), "bert", batch_size=16)
    [path] = (store / "results" / "smoke" / "test" / "measurements").glob("size_speed-*.json")
    assert json.loads(path.read_text()) == rec and rec["n_examples"] == 48
    for key in ("hardware", "git_commit", "kdlib_version", "created", "wall_time_s", "config"):
        assert key in rec
    by = {r["model"]: r for r in rec["rows"]}
    assert by["bilstm"]["params w/o embeddings"] == by["bilstm"]["params"] - 30522 * 300
    monkeypatch.setattr(sp, "size_speed", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-measured")))
    assert size_speed_record("test", _models(), "bert", batch_size=16) == rec
    assert size_speed_record("test", _models(), "bert", batch_size=16, stored_only=True) == rec


def test_measure_bad_input(store):
    with pytest.raises(KDLibError, match="unknown device 'tpu'; valid choices: cpu, cuda"):
        size_speed_record("test", _models(), "bert", device="tpu")
    with pytest.raises(KDLibError, match="unknown reference model 'gpt'; valid choices: bert, bilstm"):
        size_speed_record("test", _models(), "gpt")
    assert not (store / "results").exists()
