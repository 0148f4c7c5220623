#!/usr/bin/env bash
# Checks the operations files: every YAML and JSON file parses (no duplicate keys), the chart's dashboard is the
# same as ops/grafana's, and, with the tools that are installed (nothing is installed here):
#   helm (or the helm_python module)  lint the chart, render it with each ci/*-values.yaml and
#                                     make sure invalid values are refused
#   kubectl or kustomize              build k8s/base and k8s/overlays/dev
#   kubernetes-validate               validate everything rendered against the Kubernetes schemas
#   promtool                          check the alert rules and the dashboard's queries
#   hadolint                          lint the Dockerfile
# Exits non-zero on the first kind of problem found, after reporting all of that kind.
set -euo pipefail
cd "$(dirname "$0")/.."

chart=helm/sse-orders
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

python=python3
have "$python" || { echo "python3 is required" >&2; exit 1; }
"$python" -c 'import yaml' 2>/dev/null || { echo "python3 needs PyYAML (import yaml)" >&2; exit 1; }

log "YAML and JSON parse"
"$python" - "$chart" <<'EOF'
import json, pathlib, sys, yaml
chart = pathlib.Path(sys.argv[1])
problems = []

class StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, which plain YAML loading silently merges."""

def construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)

StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
yaml_files = sorted(
    [p for p in pathlib.Path("k8s").rglob("*.y*ml")]
    + [p for p in pathlib.Path("ops").rglob("*.y*ml")]
    + [p for p in chart.rglob("*.y*ml") if "templates" not in p.parts]
)
for path in yaml_files:
    try:
        list(yaml.load_all(path.read_text(), Loader=StrictLoader))
    except yaml.YAMLError as error:
        problems.append(f"{path}: {error}")
def unique_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate keys {duplicates}")
    return dict(pairs)

json_files = sorted(list(pathlib.Path("ops").rglob("*.json")) + list(chart.rglob("*.json")))
for path in json_files:
    try:
        json.loads(path.read_text(), object_pairs_hook=unique_keys)
    except ValueError as error:
        problems.append(f"{path}: {error}")
try:
    import ast
    ast.parse(pathlib.Path("Tiltfile").read_text(), "Tiltfile")
except SyntaxError as error:
    problems.append(f"Tiltfile: {error}")
print(f"{len(yaml_files)} YAML files, {len(json_files)} JSON files, Tiltfile")
for problem in problems:
    print("PROBLEM:", problem)
sys.exit(1 if problems else 0)
EOF

log "dashboard copy"
cmp ops/grafana/sse-orders-dashboard.json "$chart/dashboards/sse-orders.json" || {
  echo "PROBLEM: $chart/dashboards/sse-orders.json differs from ops/grafana/sse-orders-dashboard.json (copy it over)"
  exit 1
}
echo "identical"

mkdir -p "$work/rendered"

# Values that must be refused, each with a word of the expected message.
invalid_cases=(
  "redis.enabled=false|share their events through Redis"
  "redis.url=redis://elsewhere:6379|not both"
  "streamGateway.heartbeatInterval=90s|must stay below 60s"
  "streamGateway.terminationGracePeriodSeconds=20|must be larger than drainDelay + shutdownGrace"
  "streamGateway.replayWindow=ten seconds|replayWindow"
)

if have helm; then
  log "helm lint and template ($(helm version --short 2>/dev/null || echo helm))"
  helm lint --strict "$chart" >/dev/null
  for values in "$chart"/ci/*-values.yaml; do
    name=$(basename "$values" -values.yaml)
    helm lint --strict "$chart" -f "$values" >/dev/null
    helm template sse-orders "$chart" --namespace orders --kube-version 1.30.0 -f "$values" >"$work/rendered/helm-$name.yaml"
    echo "ok: $values"
  done
  for case in "${invalid_cases[@]}"; do
    set_value=${case%%|*}
    expected=${case#*|}
    if output=$(helm template sse-orders "$chart" --set "$set_value" 2>&1 >/dev/null); then
      echo "PROBLEM: the chart accepted $set_value"; exit 1
    fi
    grep -q -- "$expected" <<<"$output" || { echo "PROBLEM: $set_value refused without naming $expected: $output"; exit 1; }
    echo "refused: $set_value"
  done
elif "$python" -c 'import helm_python' 2>/dev/null; then
  log "helm lint and template (helm_python module)"
  "$python" - "$chart" "$work/rendered" "${invalid_cases[@]}" <<'EOF'
import pathlib, sys, yaml
import helm_python as helm
chart, out_dir, invalid_cases = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
problems = []

def lint(values, label):
    report = helm.lint(chart, values, strict=True)
    for message in report.get("messages", []):
        if message.get("severity", 0) >= 2:
            problems.append(f"lint {label}: {message.get('path')}: {message.get('error')}")
    problems.extend(f"lint {label}: {error}" for error in report.get("errors") or [])

def render(values):
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name="sse-orders", namespace="orders", is_install=True)
    return "\n---\n".join(
        f"# Source: {name}\n{text}" for name, text in sorted(manifests.items())
        if text.strip() and not name.endswith("NOTES.txt")
    )

lint(None, "defaults")
for values_file in sorted(pathlib.Path(chart, "ci").glob("*-values.yaml")):
    values = yaml.safe_load(values_file.read_text()) or {}
    lint(values, values_file.name)
    try:
        text = render(values)
        list(yaml.safe_load_all(text))
        (out_dir / f"helm-{values_file.name}").write_text(text)
        print(f"ok: {values_file}")
    except Exception as error:  # the SDK raises its own error types
        problems.append(f"template {values_file.name}: {error}")

for case in invalid_cases:
    setting, expected = case.split("|", 1)
    key, value = setting.split("=", 1)
    values = node = {}
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)  # typed, as helm --set does
    try:
        render(values)
        problems.append(f"the chart accepted {setting}")
    except Exception as error:
        if expected not in str(error):
            problems.append(f"{setting} refused without naming {expected}: {error}")
        else:
            print(f"refused: {setting}")

for problem in problems:
    print("PROBLEM:", problem)
sys.exit(1 if problems else 0)
EOF
else
  log "helm lint and template: skipped (neither helm nor the helm_python module is installed)"
fi

kustomize_build=()
if have kustomize; then
  kustomize_build=(kustomize build)
elif have kubectl; then
  kustomize_build=(kubectl kustomize)
fi
if [ ${#kustomize_build[@]} -gt 0 ]; then
  log "kustomize build (${kustomize_build[*]})"
  for dir in k8s/base k8s/overlays/dev; do
    "${kustomize_build[@]}" "$dir" >"$work/rendered/kustomize-$(basename "$dir").yaml"
    echo "ok: $dir"
  done
else
  log "kustomize build: skipped (neither kustomize nor kubectl is installed)"
fi

rendered=("$work"/rendered/*.yaml)
if [ -e "${rendered[0]}" ]; then
  log "rendered manifests parse"
  "$python" - "${rendered[@]}" <<'EOF'
import sys, yaml
problems = []
for path in sys.argv[1:]:
    try:
        for document in yaml.safe_load_all(open(path)):
            if document and not {"apiVersion", "kind", "metadata"} <= document.keys():
                problems.append(f"{path}: a document without apiVersion, kind and metadata")
    except yaml.YAMLError as error:
        problems.append(f"{path}: {error}")
for problem in problems:
    print("PROBLEM:", problem)
print(f"{len(sys.argv) - 1} files")
sys.exit(1 if problems else 0)
EOF
  if have kubernetes-validate; then
    log "kubernetes-validate"
    # Custom resources (ServiceMonitor) have no bundled schema: a warning, not a failure.
    kubernetes-validate --strict --quiet --no-warn "${rendered[@]}"
    echo "ok"
  else
    log "kubernetes-validate: skipped (not installed)"
  fi
fi

if have hadolint; then
  log "hadolint"
  hadolint Dockerfile
  echo "ok"
else
  log "hadolint: skipped (not installed)"
fi

if have promtool; then
  log "promtool"
  "$python" - "$work" <<'EOF'
import json, sys, yaml
work = sys.argv[1]
alerts = yaml.safe_load(open("ops/prometheus/alerts.yaml"))
with open(f"{work}/alerts.rules.yaml", "w") as out:
    yaml.safe_dump({"groups": alerts["spec"]["groups"]}, out)
dashboard = json.load(open("ops/grafana/sse-orders-dashboard.json"))
queries = [
    target["expr"].replace("$__rate_interval", "5m").replace("$namespace", ".*")
    for panel in dashboard["panels"] for target in panel.get("targets", [])
]
rules = [{"record": f"dashboard:query:{i}", "expr": expr} for i, expr in enumerate(queries)]
with open(f"{work}/dashboard.rules.yaml", "w") as out:
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, out)
EOF
  promtool check rules "$work/alerts.rules.yaml" "$work/dashboard.rules.yaml"
else
  log "promtool: skipped (not installed)"
fi

log "operations files: all checks passed"
