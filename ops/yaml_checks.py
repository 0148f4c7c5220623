"""The parts of ops/check.py that read YAML: they need PyYAML, so ops/check.py, which runs on a
bare Python, runs them with the python of ops/.venv.

    python ops/yaml_checks.py parse CHART             every YAML and JSON file; the chart's copies
    python ops/yaml_checks.py json-lines FILE...      {"file", "doc"} a line, for ops/validate_crds.mjs
    python ops/yaml_checks.py dashboard-rules OUT     the dashboard's queries as recording rules
    python ops/yaml_checks.py alert-tests RULES TESTS every alert fires and stays quiet in a unit test

Run from the repository root.
"""

import json
import pathlib
import sys

import yaml

# Installed and generated trees, not files of the repository.
SKIPPED_DIRS = {"node_modules", ".venv"}


class StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, which plain YAML loading silently merges."""


def construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)


def files(base, pattern):
    return [p for p in pathlib.Path(base).rglob(pattern) if not SKIPPED_DIRS & set(p.parts)]


def unique_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate keys {duplicates}")
    return dict(pairs)


def parse(chart):
    chart = pathlib.Path(chart)
    problems = []
    # Templates are Go templates, not YAML, until helm renders them.
    yaml_files = sorted(
        files("k8s", "*.y*ml") + files("ops", "*.y*ml")
        + [p for p in files(chart, "*.y*ml") if "templates" not in p.parts]
    )
    for path in yaml_files:
        try:
            list(yaml.load_all(path.read_text(), Loader=StrictLoader))
        except yaml.YAMLError as error:
            problems.append(f"{path}: {error}")

    json_files = sorted(
        [p for p in files("ops", "*.json") if p.name not in ("package.json", "package-lock.json")]
        + files(chart, "*.json")
    )
    for path in json_files:
        try:
            json.loads(path.read_text(), object_pairs_hook=unique_keys)
        except ValueError as error:
            problems.append(f"{path}: {error}")

    dashboard, copy = pathlib.Path("ops/grafana/sse-orders-dashboard.json"), chart / "dashboards/sse-orders.json"
    if dashboard.read_bytes() != copy.read_bytes():
        problems.append(f"{copy} differs from {dashboard} (copy it over)")
    alerts = yaml.safe_load(pathlib.Path("ops/prometheus/alerts.yaml").read_text())
    rules_copy = chart / "alerts/sse-orders.rules.yaml"
    if yaml.safe_load(rules_copy.read_text()) != {"groups": alerts["spec"]["groups"]}:
        problems.append(
            f"{rules_copy} differs from the groups of ops/prometheus/alerts.yaml; regenerate it with\n"
            "  python3 -c 'import yaml; print(yaml.safe_dump({\"groups\": yaml.safe_load("
            "open(\"ops/prometheus/alerts.yaml\"))[\"spec\"][\"groups\"]}, sort_keys=False, width=100))'"
        )
    print(f"{len(yaml_files)} YAML files, {len(json_files)} JSON files; dashboard and alert copies identical")
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


def json_lines(paths):
    for path in paths:
        with open(path) as file:
            for doc in yaml.safe_load_all(file):
                if doc:
                    print(json.dumps({"file": pathlib.Path(path).name, "doc": doc}))
    return 0


def dashboard_rules(out):
    """promtool checks rule expressions, so each dashboard query becomes a recording rule."""
    dashboard = json.loads(pathlib.Path("ops/grafana/sse-orders-dashboard.json").read_text())
    queries = [
        target["expr"].replace("$__rate_interval", "5m").replace("$namespace", ".*")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    rules = [{"record": f"dashboard:query:{i}", "expr": expr} for i, expr in enumerate(queries)]
    with open(out, "w") as file:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, file)
    return 0


def alert_tests(rules_path, tests_path):
    """Every alert needs a unit test where it fires and one where it stays quiet."""
    groups = yaml.safe_load(pathlib.Path(rules_path).read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(pathlib.Path(tests_path).read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    missing = sorted(f"{a} ({'firing' if a not in fires else 'quiet'})" for a in alerts if a not in fires or a not in quiet)
    unknown = sorted({c["alertname"] for c in cases} - alerts)
    if missing or unknown:
        print(f"PROBLEM: alerts without a unit test: {missing}; tests of unknown alerts: {unknown}")
        return 1
    print(f"{len(alerts)} alerts, each with a firing and a quiet unit test")
    return 0


COMMANDS = {
    "parse": lambda args: parse(*args),
    "json-lines": json_lines,
    "dashboard-rules": lambda args: dashboard_rules(*args),
    "alert-tests": lambda args: alert_tests(*args),
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
