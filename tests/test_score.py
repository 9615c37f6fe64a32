import json

import pytest

from xlingual.score import error_rates, write_scores


@pytest.mark.parametrize("refs, hyps, wer, cer", [
    (["a b c"], ["a b c"], 0.0, 0.0),
    (["a b c d"], ["a x c d"], 25.0, 100 / 7),
    (["a b"], ["a b c"], 50.0, 2 / 3 * 100),  # one insertion (" c" = 2 chars)
    (["a b"], [""], 100.0, 100.0),
    (["a b", "c d"], ["a b", "c"], 25.0, 2 / 6 * 100),
])
def test_error_rates(refs, hyps, wer, cer):
    r = error_rates(refs, hyps)
    assert r["wer"] == pytest.approx(wer) and r["cer"] == pytest.approx(cer)


def test_write_scores(tmp_path):
    s = write_scores(tmp_path, {"u1": "a b", "u2": "c d"}, {"u1": "a b", "u2": "c"}, decode="greedy")
    assert s["wer"] == 25.0 and s["decode"] == "greedy"
    assert json.loads((tmp_path / "summary.json").read_text())["n_words"] == 4
    worst = json.loads((tmp_path / "errors.jsonl").read_text().splitlines()[0])
    assert worst["id"] == "u2" and worst["errors"] == 1
    with pytest.raises(KeyError, match="no hypothesis"):
        write_scores(tmp_path, {"u3": "x"}, {})
