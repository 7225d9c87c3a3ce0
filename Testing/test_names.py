"""The one rule for output names chosen from ids: a plain file name in its folder on every common file system."""

from __future__ import annotations

import pytest

from FateSAMLib.errors import InputError
from FateSAMLib.names import MAX_NAME_BYTES, check_distinct_names, check_output_name, output_name_problem


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("../../escaped", "path separator"),
        ("/abs/path", "path separator"),
        ("a\\b", "path separator"),
        (".", "starts with a dot"),
        ("..", "starts with a dot"),
        (".hidden", "starts with a dot"),
        ("case\x00x", "control character '\\x00'"),
        ("case\nx", "control character"),
        ("case:1", "Windows does not allow"),
        ("what?", "Windows does not allow"),
        ("case.", "ends with a dot or a space"),
        ("case ", "ends with a dot or a space"),
        ("NUL", "device name"),
        ("con.tar", "device name"),
        ("Com1", "device name"),
        ("lpt¹", "device name"),
        ("case\udcff", "not UTF-8"),
        ("é" * (MAX_NAME_BYTES // 2 + 1), f"{MAX_NAME_BYTES + 2} bytes long"),
    ],
)
def test_an_id_that_is_no_plain_file_name_is_refused_with_the_reason_and_the_fix(name, problem):
    assert problem in output_name_problem(name)
    with pytest.raises(InputError, match="Rename it.$") as refused:
        check_output_name(name, "Rename it.")
    assert repr(name) in str(refused.value)


@pytest.mark.parametrize(
    "name", ["hippocampus_001", "Patient 4 (T2)", "Straße-ü-日本", "con2", "CONSOLE", "a.b", "x" * 200]
)
def test_plain_names_pass(name):
    assert output_name_problem(name) is None
    check_output_name(name, "unused")


def test_names_that_differ_only_in_case_or_normal_form_are_one_file():
    check_distinct_names([("a", "a.nii"), ("b", "b.nii")], "unused")
    with pytest.raises(InputError, match=r"Two cases \(x/Case1, y/case1\) have the ids 'Case1' and 'case1'.*Fix\.$"):
        check_distinct_names([("Case1", "x/Case1"), ("case1", "y/case1")], "Fix.")
    with pytest.raises(InputError, match="have the ids"):
        check_distinct_names([("caf\u00e9", 1), ("cafe\u0301", 2)], "Fix.")  # NFC and NFD spellings of one name
    with pytest.raises(InputError, match="have the id 'a'"):
        check_distinct_names([("a", 1), ("a", 2)], "Fix.")
