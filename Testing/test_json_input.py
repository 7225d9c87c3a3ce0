"""The one bounded JSON parser: nesting and size refused before parsing, with one message of the caller's class."""

from __future__ import annotations

import pytest

from FateSAMLib.errors import CheckpointError, InputError
from FateSAMLib.json_input import MAX_DEPTH, parse_json


def test_nesting_up_to_the_bound_is_read_and_brackets_in_strings_do_not_count():
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(deepest, "X", "fix.") == eval(deepest)
    assert parse_json('{"a": "[[[[{{{{\\"[[["}', "X", "fix.", max_depth=1) == {"a": '[[[[{{{{"[[['}
    with pytest.raises(InputError, match=r"^X nests arrays or objects more than 32 levels deep; fix\.$"):
        parse_json("[" + deepest + "]", "X", "fix.")


def test_every_refusal_is_one_message_of_the_callers_error_class(tmp_path):
    for text, problem in (
        (b"[" * 999, "nests arrays or objects more than 32 levels deep"),  # Python's parser: a RecursionError
        (b"1" * 2000, "is too large (over 1000 bytes, the most that is read)"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (b'{"a": ', "is not valid JSON (Expecting value: line 1 column 7 (char 6))"),
    ):
        with pytest.raises(CheckpointError) as refused:
            parse_json(text, "The record", "delete it.", error=CheckpointError, max_bytes=1000)
        assert str(refused.value) == f"The record {problem}; delete it."
    with pytest.raises(InputError, match=r"^The file cannot be read \(No such file or directory\); fix\.$"):
        parse_json(tmp_path / "missing.json", "The file", "fix.")
    (tmp_path / "big.json").write_bytes(b" " * 5000 + b"1")
    with pytest.raises(InputError, match="is too large"):
        parse_json(tmp_path / "big.json", "The file", "fix.", max_bytes=1000)
