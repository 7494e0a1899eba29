"""The input: source.chunks (reads cut anywhere joined into lines), split, and Source with a list or a file
(a pipe here), its reader thread held back by the read-ahead limit until messages are done."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from workqueue import source
from workqueue.report import Failure

WAIT = 2.0  # seconds at most for the reader thread; each of these tests takes a few ms


def chunks(*reads: bytes) -> list[list[str]]:
    """What source.chunks makes of these reads, then the end of input (an empty read)."""
    return list(source.chunks([*reads, b""]))


# -- split


def test_split_takes_off_newlines_and_carriage_returns():
    assert source.split("a\nb\n") == ["a", "b"]
    assert source.split("a\r\nb\r\n") == ["a", "b"]
    assert source.split("a\n\nb\n") == ["a", "", "b"]
    assert source.split("last") == ["last"]


def test_split_keeps_a_carriage_return_inside_a_line_only_at_its_end_removed():
    assert source.split("a\rb\r\n") == ["a\rb"]


# -- chunks


def test_each_read_gives_its_complete_lines_as_one_chunk():
    assert chunks(b"a\nb\n", b"c\n") == [["a", "b"], ["c"]]


def test_a_line_cut_between_reads_is_joined_again():
    assert chunks(b"hel", b"lo\nwor", b"ld\n") == [["hello"], ["world"]]


def test_a_read_without_a_newline_gives_no_chunk_yet():
    reads = iter([b"no newline ", b"yet", b"\n", b""])
    out = source.chunks(reads)
    assert next(out) == ["no newline yet"]


def test_a_multibyte_character_cut_between_reads_is_whole_again():
    data = "héllo wörld ✓\n".encode()
    for cut in range(1, len(data)):
        assert chunks(data[:cut], data[cut:]) == [["héllo wörld ✓"]], cut


def test_every_byte_its_own_read():
    data = "ü\r\n€\n\nlast".encode()
    assert [line for chunk in chunks(*(bytes([b]) for b in data)) for line in chunk] == ["ü", "€", "", "last"]


def test_crlf_lines_and_a_crlf_cut_between_reads():
    assert chunks(b"a\r", b"\nb\r\n") == [["a", "b"]]


def test_the_last_line_without_a_newline_comes_at_the_end_of_input():
    assert chunks(b"a\nlast") == [["a"], ["last"]]


def test_empty_input_gives_nothing():
    assert chunks() == []
    assert list(source.chunks([])) == []


def test_an_empty_line_is_a_message():
    assert chunks(b"\n") == [[""]]
    assert chunks(b"a\n\n\nb\n") == [["a", "", "", "b"]]


def test_invalid_utf8_gives_the_good_lines_first_then_unicode_error():
    out = source.chunks([b"good\nfine\nbad \xff line\nafter\n", b""])
    assert next(out) == ["good", "fine"]
    with pytest.raises(UnicodeError):
        next(out)


def test_invalid_utf8_in_the_first_line_is_unicode_error_at_once():
    with pytest.raises(UnicodeError):
        chunks(b"\xc3\x28\n")


def test_invalid_utf8_in_a_later_read_after_good_reads():
    out = source.chunks([b"one\n", b"two\n\xfe\n", b""])
    assert next(out) == ["one"]
    assert next(out) == ["two"]
    with pytest.raises(UnicodeError):
        next(out)


def test_a_multibyte_character_cut_off_at_the_end_of_input_is_unicode_error():
    out = source.chunks([b"ok\n\xe2\x9c", b""])
    assert next(out) == ["ok"]
    with pytest.raises(UnicodeError):
        next(out)


# -- lines (anything that is not a file: one message at a time)


def test_lines_of_a_list_come_one_at_a_time():
    assert list(source.lines(["a", "b"])) == [["a"], ["b"]]


def test_lines_of_closed_standard_input_is_an_os_error():
    with pytest.raises(OSError, match="standard input is closed"):
        list(source.lines(None))  # type: ignore[arg-type]


def test_lines_stop_at_a_message_that_is_not_utf8_text():
    out = source.lines(["ok", "bad \udcff"])
    assert next(out) == ["ok"]
    with pytest.raises(UnicodeError):
        next(out)


# -- Source with a list


def test_a_list_is_taken_at_once_and_ended():
    src = source.Source(["a", "b", "c"], limit=1)
    assert src.ended and not src.streamed and src.failure == ""
    assert src.waiting() == 3
    src.start(lambda: None)
    assert src.take() == ["a", "b", "c"]
    assert src.take() == [] and src.waiting() == 0


def test_a_list_with_a_message_that_is_not_text_is_a_failure():
    with pytest.raises(Failure, match="not UTF-8 text"):
        source.Source(["fine", "\udcff"], limit=10)


# -- Source with a file


class Pipe:
    """A Source reading the read end of a pipe, and a wake that counts its calls."""

    def __init__(self, limit: int) -> None:
        r, self.w = os.pipe()
        self.file = os.fdopen(r, "rb", buffering=0)
        self.source = source.Source(self.file, limit)  # type: ignore[arg-type]
        self.wakes = 0
        self._woken = threading.Condition()
        self.source.start(self._wake)

    def _wake(self) -> None:
        with self._woken:
            self.wakes += 1
            self._woken.notify_all()

    def write(self, data: bytes) -> None:
        os.write(self.w, data)

    def close(self) -> None:
        if self.w >= 0:
            os.close(self.w)
            self.w = -1

    def until(self, condition, timeout: float = WAIT) -> None:
        with self._woken:
            assert self._woken.wait_for(condition, timeout), "the reader did not get there in time"

    def until_waiting(self, count: int) -> None:
        self.until(lambda: self.source.waiting() >= count)

    def until_ended(self) -> None:
        self.until(lambda: self.source.ended)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    made: list[Pipe] = []

    def make(limit: int = 100) -> Pipe:
        p = Pipe(limit)
        made.append(p)
        return p

    yield make  # type: ignore[misc]
    for p in made:
        p.source.stop()
        p.close()
        if p.source._thread:
            p.source._thread.join(WAIT)
        p.file.close()


def test_a_file_is_streamed_in_chunks_as_lines_come(pipe):
    p = pipe()
    assert p.source.streamed and not p.source.ended
    p.write(b"one\ntwo\n")
    p.until_waiting(2)
    assert p.source.take() == ["one", "two"]
    p.write(b"thr")
    p.write(b"ee\n")
    p.until_waiting(1)
    assert p.source.take() == ["three"]
    p.close()
    p.until_ended()
    assert p.source.take() == [] and p.source.failure == ""
    assert p.wakes >= 3  # for each chunk, and at the end


@pytest.mark.parametrize(("content", "messages", "failure"), [
    (b"a\nb", ["a", "b"], ""),  # the last line without its newline
    (b"", [], ""),  # an empty file ends with nothing
    (b"one\ntwo\n\xff\nfour\n", ["one", "two"],  # a line that is not UTF-8 stops the reading, with its number
     "input line 3 is not UTF-8 text; it and the lines after it were not sent"),
], ids=["last_line_without_newline", "empty", "not_utf8_stops_with_the_line_number"])
def test_a_file_read_to_its_end(pipe, content, messages, failure):
    p = pipe()
    if content:
        p.write(content)
    p.close()
    p.until_ended()
    assert p.source.take() == messages
    assert p.source.failure == failure


def test_start_twice_starts_one_reader(pipe):
    p = pipe()
    p.source.start(p._wake)  # again: changes nothing
    p.write(b"x\n")
    p.close()
    p.until_ended()
    assert p.source.take() == ["x"]


def test_the_read_ahead_limit_holds_the_reader_back_until_done(pipe):
    p = pipe(limit=2)
    p.write(b"a\nb\n")
    p.until_waiting(2)
    assert p.source.take() == ["a", "b"]
    p.write(b"c\n")  # read from the pipe, and held: two are read ahead of the confirms already
    with p._woken:
        assert not p._woken.wait_for(lambda: p.source.waiting() > 0, 0.05)
    p.source.done(1)
    p.until_waiting(1)
    assert p.source.take() == ["c"]
    p.close()
    p.until_ended()


def test_stop_lets_a_held_reader_end_without_taking_more(pipe):
    p = pipe(limit=1)
    p.write(b"a\n")
    p.until_waiting(1)
    p.write(b"b\n")
    p.source.stop()
    p.until_ended()
    assert p.source.take() == ["a"]


def test_a_wake_that_fails_does_not_stop_the_reader(pipe):
    p = pipe()
    calls = []

    def closed() -> None:
        calls.append(1)
        raise RuntimeError("the connection is closed")

    p.source._wake = closed
    p.write(b"a\n")
    p.close()
    assert p.source._thread is not None
    p.source._thread.join(WAIT)
    assert p.source.ended and p.source.take() == ["a"] and len(calls) == 2  # the chunk, the end
