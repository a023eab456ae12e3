"""run_id(): argv markers and SNAKEPIT_RUN_ID, validated like Go's runid."""

import pytest

from snakepit_worker import extract_run_id, generate_run_id, run_id, validate_run_id

GOOD = ["abc1234", "0000000", "zzzzzzz", "a1b2c3d"]
# Go's runid.TestValidate table plus Python-specific traps: str.isdigit and
# str.isalnum accept non-ASCII digits/letters; len() counts characters, not
# bytes, so a 7-character non-ASCII string must still be rejected.
BAD = ["", "abc123", "abc12345", "ABCDEFG", "Abc1234", "../etc", "../etc/", "abc/123",
       "abc 123", "abc\x00123", "äbc1234", "ab\u00e91234", "abc-123", ".......",
       "\uff11\uff12\uff13\uff14\uff15\uff16\uff17", "abc123\n", " abc1234",
       "abc_123", "abc.123", "٣٣٣٣٣٣٣", "ǆǆǆǆǆǆǆ"]


@pytest.mark.parametrize("value", GOOD)
def test_validate_good(value):
    assert validate_run_id(value) == value


@pytest.mark.parametrize("value", BAD)
def test_validate_bad(value):
    with pytest.raises(ValueError):
        validate_run_id(value)


@pytest.mark.parametrize("value", [None, 1234567, b"abc1234"])
def test_validate_non_string(value):
    with pytest.raises(ValueError):
        validate_run_id(value)


@pytest.mark.parametrize("argv", [
    ["w.py", "--snakepit-run-id", "abc1234"],
    ["w.py", "--run-id", "abc1234"],
    ["w.py", "--snakepit-run-id=abc1234"],
    ["w.py", "--run-id=abc1234"],
    ["w.py", "--port", "0", "--run-id=abc1234", "--x"],
])
def test_argv_forms(argv):
    assert run_id(argv, environ={}) == "abc1234"


def test_first_marker_wins():
    assert run_id(["w", "--run-id", "aaaaaaa", "--snakepit-run-id", "bbbbbbb"], {}) == "aaaaaaa"
    assert run_id(["w", "--snakepit-run-id=bbbbbbb", "--run-id", "aaaaaaa"], {}) == "bbbbbbb"


def test_first_marker_wins_even_if_invalid():
    # Like Go's Extract: the first marker decides; a bad first one is an error
    # even if a later marker would be fine.
    with pytest.raises(ValueError):
        run_id(["w", "--run-id", "BAD", "--snakepit-run-id", "abc1234"], {})


def test_env_fallback_and_precedence():
    assert run_id(["w"], {"SNAKEPIT_RUN_ID": "env1234"}) == "env1234"
    assert run_id(["w", "--run-id", "arg1234"], {"SNAKEPIT_RUN_ID": "env1234"}) == "arg1234"


def test_absent_is_none():
    assert run_id(["w", "--port", "1"], {}) is None
    assert run_id([], {}) is None


@pytest.mark.parametrize("argv", [
    ["w", "--run-id"],
    ["w", "--snakepit-run-id"],
    ["w", "--run-id="],
    ["w", "--snakepit-run-id="],
])
def test_marker_without_value(argv):
    with pytest.raises(ValueError):
        run_id(argv, {})


@pytest.mark.parametrize("value", BAD)
def test_bad_values_rejected_everywhere(value):
    for argv in (["w", "--run-id", value], ["w", "--snakepit-run-id", value],
                 ["w", f"--run-id={value}"], ["w", f"--snakepit-run-id={value}"]):
        with pytest.raises(ValueError):
            run_id(argv, {})
    with pytest.raises(ValueError):
        run_id(["w"], {"SNAKEPIT_RUN_ID": value})


def test_similar_flags_are_not_markers():
    assert extract_run_id(["w", "--run-idx", "abc1234", "--snakepit-run", "abc1234",
                           "-run-id", "abc1234", "run-id=abc1234"]) is None


def test_defaults_to_process_argv_and_environ(monkeypatch):
    monkeypatch.setattr("sys.argv", ["w", "--run-id=sys1234"])
    monkeypatch.setenv("SNAKEPIT_RUN_ID", "env1234")
    assert run_id() == "sys1234"
    monkeypatch.setattr("sys.argv", ["w"])
    assert run_id() == "env1234"
    monkeypatch.delenv("SNAKEPIT_RUN_ID")
    assert run_id() is None


def test_generate():
    seen = {generate_run_id() for _ in range(2000)}
    assert len(seen) == 2000
    for rid in seen:
        validate_run_id(rid)
