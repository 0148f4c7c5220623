"""ops/check.py and ops/yaml_checks.py themselves: every check is run and documented, and the
YAML checks refuse what they are there to refuse."""

import importlib.util
import inspect
import pathlib

import pytest
import yaml

OPS = pathlib.Path(__file__).resolve().parent.parent


def load(name):
    spec = importlib.util.spec_from_file_location(name, OPS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = load("check")
yaml_checks = load("yaml_checks")

HELPERS = {"problem", "need", "yaml_checks", "renders"}


def test_every_check_runs_and_is_documented():
    methods = {
        name for name, _ in inspect.getmembers(check.Checks, inspect.isfunction)
        if not name.startswith("_") and name not in HELPERS
    }
    ordered = [name for name, _ in check.ORDER]
    assert sorted(ordered) == sorted(methods)
    for name in ordered:
        assert f"\n  {name} " in check.__doc__, f"{name} is missing from the list at the top of ops/check.py"


def test_checks_read_only_the_output_of_earlier_checks():
    seen = set()
    for name, inputs in check.ORDER:
        assert set(inputs) <= seen, name
        seen.add(name)


def test_every_invalid_value_expects_words_of_its_message():
    assert len(check.INVALID_VALUES) == 17
    assert all(expected for _, expected in check.INVALID_VALUES)
    assert len({value for value, _ in check.INVALID_VALUES}) == len(check.INVALID_VALUES)


def test_duplicate_yaml_keys_are_refused():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        yaml.load("a: 1\nb: 2\na: 3\n", Loader=yaml_checks.StrictLoader)


def test_duplicate_json_keys_are_refused():
    with pytest.raises(ValueError, match=r"duplicate keys \['a'\]"):
        yaml_checks.unique_keys([("a", 1), ("a", 2)])


def test_an_alert_without_a_quiet_test_is_named(tmp_path, capsys):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "Down", "expr": "up == 0"}]}]}))
    tests = tmp_path / "tests.yaml"
    firing = {"alertname": "Down", "eval_time": "1m", "exp_alerts": [{"exp_labels": {}}]}
    tests.write_text(yaml.safe_dump({"tests": [{"alert_rule_test": [firing]}]}))
    assert yaml_checks.alert_tests(rules, tests) == 1
    assert "Down (quiet)" in capsys.readouterr().out
