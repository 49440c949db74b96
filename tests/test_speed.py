from kdlib.bilstm import BiLSTMClassifier
from kdlib.data import encode, synthetic_task
from kdlib.models import fresh_student, load_tokenizer
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
