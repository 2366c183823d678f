import pytest

from shared.cli import shadowed_by_profile
from shared.params import (ParamError, coerce, parse_parameters_cell, parse_set_options, resolve,
                           validate)

CELL = '''
profile: str = "small"  # set by the runner
device: str = "auto"  # set by the runner
output_dir: str = ""  # set by the runner
progress: bool = True  # set by the runner
n: int = 8  # string length | 2 <= x <= 32
lr: float = 0.01  # learning rate | 0 < x < 1
ks: list[int] = [0, 2, 8]  # scratch tokens | all(0 <= k <= n for k in x)
arch: str = "a"  # alphabet |V| matters here | x in ("a", "b")
note: str | None = None  # optional note
flag: bool = False  # a switch
'''


@pytest.fixture
def specs():
    return parse_parameters_cell(CELL)


def test_parse_reads_types_defaults_docs_and_checks(specs):
    assert list(specs)[:4] == ["profile", "device", "output_dir", "progress"]
    n = specs["n"]
    assert (n.type, n.default, n.doc, n.check) == ("int", 8, "string length", "2 <= x <= 32")
    assert specs["ks"].default == [0, 2, 8]
    # the constraint is after the LAST " | ", so a doc may contain |V|
    assert specs["arch"].doc == "alphabet |V| matters here"
    assert specs["arch"].check == 'x in ("a", "b")'
    assert specs["flag"].check is None


def test_parse_rejects_unannotated_and_non_literal():
    with pytest.raises(ParamError, match="line 1"):
        parse_parameters_cell("n = 3\n")
    with pytest.raises(ParamError, match="not a literal"):
        parse_parameters_cell(CELL + "x: int = 2 + y\n")
    with pytest.raises(ParamError, match="unsupported type"):
        parse_parameters_cell(CELL + "x: dict = {}\n")


def test_parse_requires_runner_parameters():
    with pytest.raises(ParamError, match="runner parameter 'progress'"):
        parse_parameters_cell('profile: str = "small"\ndevice: str = "auto"\noutput_dir: str = ""\n')


@pytest.mark.parametrize("value,type_,expected", [
    (3, "int", 3), (3, "float", 3.0), (2.5, "float", 2.5), (True, "bool", True), ("a", "str", "a"),
    ((1, 2), "list[int]", [1, 2]), (None, "str | None", None), ("x", "str | None", "x"),
])
def test_coerce_accepts(value, type_, expected):
    out = coerce(value, type_)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value,type_", [
    ("false", "bool"), (1, "bool"), (True, "int"), (2.0, "int"), ("3", "int"), (None, "int"),
    ([1, "a"], "list[int]"), (3, "list[int]"), (1, "str"),
])
def test_coerce_rejects(value, type_):
    with pytest.raises(TypeError):
        coerce(value, type_)


def test_validate_errors_name_the_key(specs):
    with pytest.raises(ParamError, match=r"paper: unknown parameter 'bogus' \(known: "):
        validate(specs, {"bogus": 1}, "paper")
    with pytest.raises(ParamError, match=r"parameter 'n' must be int, got 'eight' \(str\)"):
        validate(specs, {"n": "eight"}, "paper")
    with pytest.raises(ParamError, match=r"parameter 'n' = 1 violates `2 <= x <= 32` \(string length\)"):
        validate(specs, {"n": 1}, "paper")
    # a constraint may name other parameters, also inside a generator expression
    with pytest.raises(ParamError, match="'ks'"):
        validate(specs, {"n": 4, "ks": [0, 8]}, "paper")
    assert validate(specs, {"n": 4, "ks": [0, 4]}, "paper")["ks"] == [0, 4]


def test_validate_fills_defaults_and_normalises(specs):
    out = validate({**specs, "lr": specs["lr"].__class__("lr", "float", 0.5)}, {"lr": 1}, "paper")
    assert out["lr"] == 1.0 and isinstance(out["lr"], float)
    assert out["n"] == 8 and out["note"] is None


def test_resolve_merges_section_profile_and_overrides(specs):
    data = {"paper": {"n": 10, "lr": 0.1, "profiles": {"smoke": {"n": 4, "ks": [0]}, "full": {"n": 32}}}}
    spec_no_runner = specs
    assert resolve(spec_no_runner, data, "paper", "small")["n"] == 10
    smoke = resolve(spec_no_runner, data, "paper", "smoke")
    assert (smoke["n"], smoke["ks"], smoke["lr"]) == (4, [0], 0.1)
    assert resolve(spec_no_runner, data, "paper", "smoke", {"n": 5})["n"] == 5
    assert "profile" not in smoke and "device" not in smoke


def test_resolve_rejects_bad_profile_section_and_runner_keys(specs):
    data = {"paper": {"n": 10, "profiles": {"huge": {"n": 4}}}}
    with pytest.raises(ParamError, match="unknown profile 'fast'"):
        resolve(specs, {"paper": {}}, "paper", "fast")
    with pytest.raises(ParamError, match="defines unknown profile 'huge'"):
        resolve(specs, data, "paper", "small")
    with pytest.raises(ParamError, match="no section 'other'"):
        resolve(specs, data, "other", "small")
    with pytest.raises(ParamError, match="'device' is set by the runner"):
        resolve(specs, {"paper": {}}, "paper", "small", {"device": "cpu"})


def test_parse_set_options_uses_yaml_values():
    assert parse_set_options(["n=3", "ks=[0, 1]", "lr=1e-3", "flag=false", "name=abc"]) == {
        "n": 3, "ks": [0, 1], "lr": 1e-3, "flag": False, "name": "abc"}
    with pytest.raises(ParamError, match="key=value"):
        parse_set_options(["n"])


def test_a_changed_base_value_hidden_by_the_profile_is_named(specs):
    # n changed from the notebook default 8 (as `dvc exp run -S paper.n=12` would) and the smoke profile sets 4
    data = {"paper": {"n": 12, "lr": 0.01, "profiles": {"smoke": {"n": 4, "lr": 0.5, "ks": [0, 2]}}}}
    notes = shadowed_by_profile(specs, data, "paper", "smoke")
    assert len(notes) == 1 and "n=12" in notes[0] and "paper.profiles.smoke.n" in notes[0]
    assert resolve(specs, data, "paper", "smoke")["n"] == 4  # the precedence itself is unchanged
    # lr is at its default in the base: the profile's own value is the intent, nothing to say
    assert shadowed_by_profile(specs, data, "paper", "small") == []
    data["paper"]["profiles"]["smoke"]["n"] = 12  # the profile agrees with the changed base value
    assert shadowed_by_profile(specs, data, "paper", "smoke") == []
