"""xlingual.progress: a tqdm bar on a terminal; plain, rate-limited lines (no carriage returns) in a log or a pipe."""

from __future__ import annotations

import io

import pytest

from xlingual import progress as progress_mod
from xlingual.progress import progress


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(progress_mod, "_now", c)
    return c


def test_log_file_gets_plain_lines_at_most_every_interval(clock):
    out = io.StringIO()  # not a terminal, like a log file or a pipe
    with progress(total=1000, desc="prepare train", unit="utt", file=out) as bar:
        for i in range(1000):
            clock.t += 0.1  # 100 s in all: a line every 30 s, not one per update
            bar.update()
            bar.set_postfix(skipped=i // 100)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("prepare train: 0/1000 utt")
    assert 3 <= len(lines) <= 6  # first, ~3 in between, final
    assert lines[-1].startswith("prepare train: 1000/1000 utt (100%) done in 1 min 40 s")
    assert "skipped=9" in lines[-1]


def test_iterable_without_total_and_a_quick_step(clock):
    out = io.StringIO()
    items = list(progress(iter(range(5)), desc="extract", unit="file", file=out))
    assert items == list(range(5))
    lines = out.getvalue().splitlines()
    assert lines == ["extract: 0 file", "extract: 5 file done in 0 s"]


def test_terminal_gets_a_tqdm_bar():
    out = Tty()
    with progress(total=3, desc="prepare dev", file=out) as bar:
        bar.update(3)
    assert "\r" in out.getvalue() and "prepare dev" in out.getvalue() and "3/3" in out.getvalue()


def test_disabled_writes_nothing(capsys):
    out = io.StringIO()
    assert list(progress(range(3), desc="x", enabled=False, file=out)) == [0, 1, 2]
    with progress(total=2, desc="x", enabled=False, file=out) as bar:
        bar.update(2)
        bar.set_postfix(a=1)
    assert out.getvalue() == ""


def test_default_stream_is_stderr_and_not_a_tty_under_capture(capsys, clock):
    with progress(total=2, desc="step") as bar:
        bar.update(2)
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].startswith("step: 2/2")


def test_a_step_that_stops_early_says_so(clock):
    out = io.StringIO()
    for i in progress(range(5), desc="decode", file=out):
        if i == 1:
            break
    assert out.getvalue().splitlines()[-1] == "decode: 1/5 it (20%) stopped after 0 s"
