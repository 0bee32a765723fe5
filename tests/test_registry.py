import subprocess
import sys

import pytest

from harness.cli import main
from harness.plugins import METHODS, SUITES, make_method, split_method_id
from harness.registry import Registry, UnknownNameError


def test_register_lazy_and_make():
    reg: Registry = Registry("thing")
    reg.register("counter", "collections:Counter", "a counter")
    assert "counter" in reg and reg.names() == ["counter"]
    c = reg.make("counter")
    assert type(c).__name__ == "Counter"


def test_unknown_name_names_closest():
    reg: Registry = Registry("method")
    for n in ("fastv", "sparsevlm", "shallow_pi"):
        reg.register(n, "collections:Counter")
    with pytest.raises(UnknownNameError) as e:
        reg.entry("fastvv")
    assert e.value.closest == "fastv"
    assert "did you mean 'fastv'" in str(e.value)


def test_double_registration_with_other_target_fails():
    reg: Registry = Registry("suite")
    reg.register("a", "x:y")
    reg.register("a", "x:y")  # same target: idempotent
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", "x:z")


def test_plugins_discovered():
    assert "mock" in METHODS and "expert" in METHODS
    assert "mock-v1" in SUITES


def test_variants():
    assert split_method_id("fastv@keep0.5") == ("fastv", "keep0.5")
    assert make_method("mock@broken").method_id == "mock@broken"
    with pytest.raises(UnknownNameError, match="broken"):
        make_method("mock@brokn")


def test_listing_does_not_import_heavy_modules():
    code = ("import sys; from harness.plugins import METHODS, SUITES; METHODS.names(); SUITES.names(); "
            "bad=[m for m in ('torch','mujoco','highway_env','robosuite') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("argv,needle", [
    (["bench", "--method", "mok", "--suite", "mock-v1"], "did you mean 'mock'"),
    (["bench", "--method", "mock", "--suite", "mock-v2"], "did you mean 'mock-v1'"),
    (["bench", "--method", "mock", "--suite", "mock-v1", "--profile", "smok"], "did you mean 'smoke'"),
    (["bench", "--method", "mock", "--suite", "mock-v1", "--set", "dimm=3"], "unknown field 'dimm'"),
    (["bench", "--method", "mock", "--suite", "mock-v1", "--set", "depth=two"], "depth"),
    (["bench", "--method", "mock", "--suite", "mock-v1", "--workers", "0"], "workers"),
])
def test_cli_bad_input_exits_2(argv, needle, capsys, tmp_path):
    rc = main([*argv, "--results", str(tmp_path)])
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_cli_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mock-v1" in out and "expert" in out


def test_alias_resolves_to_target_and_runs_are_filed_under_it():
    from harness.plugins import canonical_method_id, make_method
    from harness.specs import RunSpec

    reg: Registry = Registry("thing")
    reg.register("real", "builtins:dict", "a real entry")
    reg.alias("nick", "real")
    assert "nick" in reg and reg.canonical("nick") == "real" and reg.entry("nick").name == "real"
    assert "nick" not in reg.names()  # aliases are not listed as entries of their own
    with pytest.raises(ValueError, match="clashes"):
        reg.alias("real", "real")
    # the project's alias: `teacher` is the reference VLA, and its runs live under results/<suite>/reference
    assert canonical_method_id("teacher@regression") == "reference@regression"
    assert type(make_method("teacher")).__name__ == "ReferenceMethod"
    assert RunSpec(method="teacher", suite="driving").method == "reference"


def test_unversioned_suite_names_resolve_to_the_newest_version():
    from harness.plugins import SUITES, canonical_suite_id
    from harness.specs import RunSpec

    assert canonical_suite_id("libero_object") == "libero_object-v1"
    assert canonical_suite_id("simpler_tabletop") == "simpler_tabletop-v1"
    assert canonical_suite_id("libero") == "libero"  # a registered group id stays itself
    assert RunSpec(method="teacher", suite="libero_object").suite == "libero_object-v1"
    assert "driving_merge" in SUITES and "nonexistent" not in SUITES


def test_set_values_parse_as_yaml_with_exponent_floats():
    """YAML 1.1 reads `3e-4` (no dot) as a string; a float field would then fail its type check."""
    from harness.cli import _parse_overrides
    from harness.interfaces import parse_value

    assert _parse_overrides(["lr=3e-4", "steps=12", "name=abc", "flag=true"]) == (
        ("flag", True), ("lr", 3e-4), ("name", "abc"), ("steps", 12))
    assert parse_value("[1, 2]") == [1, 2] and parse_value("nan") == "nan"
