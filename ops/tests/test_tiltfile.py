"""The Tiltfile, executed by a Starlark interpreter (starlark-pyo3) against recording stand-ins for
Tilt's functions: what it builds, deploys and forwards in each of its modes. helm(), kustomize()
and filter_yaml() do the real work (helm template, kubectl kustomize), so the names the Tiltfile
configures are checked against the objects that are really deployed.

Also: ops/tilt/restart-on-change, the wrapper that restarts a binary replaced by a live update.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest
import starlark
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELM = os.environ.get("HELM") or shutil.which("helm") or str(ROOT / "ops/node_modules/.bin/helm")


class TiltRun:
    """One evaluation of the Tiltfile with the given `tilt up -- ARGS` flags."""

    def __init__(self, flags):
        self.flags = flags
        self.defined = {}
        self.images = []
        self.local_resources = {}
        self.yaml = []
        self.resources = {}

    # config
    def define_bool(self, name, usage=""):
        self.defined[name] = usage

    def parse(self):
        unknown = set(self.flags) - set(self.defined)
        assert not unknown, f"flags the Tiltfile does not define: {unknown}"
        return dict(self.flags)

    # building
    def docker_build(self, ref, context, **options):
        self.images.append({"ref": ref, "context": context, **options})

    def sync(self, local_path, remote_path):
        return {"step": "sync", "local": local_path, "remote": remote_path}

    def fall_back_on(self, files):
        return {"step": "fall_back_on", "files": files if isinstance(files, list) else [files]}

    def local_resource(self, name, cmd=None, **options):
        assert name not in self.local_resources, f"local_resource {name} defined twice"
        self.local_resources[name] = {"cmd": cmd, **options}

    # manifests
    def blob(self, text):
        return text

    def helm(self, chart, name, namespace, values=()):
        command = [HELM, "template", name, str(ROOT / chart), "--namespace", namespace]
        for file in values:
            command += ["-f", str(ROOT / file)]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def kustomize(self, path):
        return subprocess.run(
            ["kubectl", "kustomize", str(ROOT / path)], check=True, capture_output=True, text=True
        ).stdout

    def filter_yaml(self, text, labels=None):
        matching, rest = [], []
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            doc_labels = doc.get("metadata", {}).get("labels") or {}
            selected = all(doc_labels.get(k) == v for k, v in (labels or {}).items())
            (matching if selected else rest).append(doc)
        return yaml.safe_dump_all(matching), yaml.safe_dump_all(rest)

    def k8s_yaml(self, text):
        self.yaml.extend(doc for doc in yaml.safe_load_all(text) if doc)

    def k8s_resource(self, workload, **options):
        assert workload not in self.resources, f"k8s_resource {workload} configured twice"
        self.resources[workload] = options

    def link(self, url, name=""):
        return {"url": url, "name": name}

    # evaluation
    def run(self):
        module = starlark.Module()
        for name in ("define_bool", "parse"):
            module.add_callable(f"_config_{name}", getattr(self, name))
        for name in (
            "docker_build", "sync", "fall_back_on", "local_resource", "blob", "helm", "kustomize",
            "filter_yaml", "k8s_yaml", "k8s_resource", "link",
        ):
            module.add_callable(name, getattr(self, name))
        globals_ = starlark.Globals.extended_by([starlark.LibraryExtension.StructType])
        prelude = "config = struct(define_bool = _config_define_bool, parse = _config_parse)\n"
        starlark.eval(module, starlark.parse("prelude", prelude), globals_)
        # Tilt's dialect: the standard one plus top-level if/for statements and f-strings.
        dialect = starlark.Dialect.extended()
        dialect.enable_top_level_stmt = True
        dialect.enable_f_strings = True
        source = (ROOT / "Tiltfile").read_text()
        starlark.eval(module, starlark.parse("Tiltfile", source, dialect), globals_)
        return self

    def workload(self, name):
        matches = [
            doc for doc in self.yaml
            if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"] == name
        ]
        assert len(matches) == 1, f"{name}: {len(matches)} workloads of that name are deployed"
        return matches[0]


def workspace_members():
    cargo = (ROOT / "Cargo.toml").read_text()
    members = cargo.split("members = [", 1)[1].split("]", 1)[0]
    return [m.strip().strip('"') for m in members.split(",") if m.strip()]


def container_ports(workload):
    return {
        port["containerPort"]
        for container in workload["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }


def check_forwards_and_names(run, names):
    """Each of order-api, stream-gateway and redis is configured on a workload that is deployed,
    shown under its short name and forwarded to a port its container listens on."""
    expected = {"order-api": "8081:8080", "stream-gateway": "8082:8080", "redis": "6380:6379"}
    assert set(run.resources) == set(names.values())
    for short, workload_name in names.items():
        options = run.resources[workload_name]
        workload = run.workload(workload_name)
        if workload_name != short:
            assert options["new_name"] == short
        assert options["port_forwards"] == [expected[short]]
        assert int(expected[short].split(":")[1]) in container_ports(workload)
    for service in ("order-api", "stream-gateway"):
        assert "redis" in run.resources[names[service]]["resource_deps"]


def check_app_images(run):
    """Every order-api / stream-gateway container runs the image Tilt builds, with a command the
    image provides."""
    commands = set()
    for doc in run.yaml:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert container["image"].split(":")[0] == "sse-orders", container["image"]
            commands.add(tuple(container["command"]))
    assert commands == {("/usr/local/bin/order-api",), ("/usr/local/bin/stream-gateway",)}


def test_default_mode_compiles_here_and_live_updates_the_chart_deployment():
    run = TiltRun({}).run()

    compile_step = run.local_resources["compile"]
    assert compile_step["cmd"] == "ops/tilt/compile"
    assert (ROOT / "ops/tilt/compile").stat().st_mode & 0o111
    for source in workspace_members() + ["Cargo.toml", "Cargo.lock", "src"]:
        assert source in compile_step["deps"], f"a change in {source} does not recompile"

    [image] = run.images
    assert image["ref"] == "sse-orders"
    assert image["context"] == "target/tilt"
    assert image["dockerfile"] == "ops/tilt/Dockerfile"
    syncs = [step for step in image["live_update"] if step["step"] == "sync"]
    assert syncs == [{"step": "sync", "local": "target/tilt/bin/", "remote": "/opt/sse-orders/bin/"}]
    assert image["live_update"][0]["step"] == "fall_back_on"
    # The image puts the binaries where the sync writes them, behind the restarting wrapper.
    dockerfile = (ROOT / "ops/tilt/Dockerfile").read_text()
    assert "COPY bin/ /opt/sse-orders/bin/" in dockerfile
    assert 'ln -s restart-on-change "/usr/local/bin/$binary"' in dockerfile

    names = {
        "order-api": "sse-orders-order-api",
        "stream-gateway": "sse-orders-stream-gateway",
        "redis": "sse-orders-redis",
    }
    check_forwards_and_names(run, names)
    check_app_images(run)
    for service in ("order-api", "stream-gateway"):
        assert "compile" in run.resources[names[service]]["resource_deps"]

    kinds = [(doc["kind"], doc["metadata"]["name"]) for doc in run.yaml]
    assert ("Namespace", "sse-orders") in kinds
    assert not [doc for doc in run.yaml if doc["kind"] == "Pod"], "the helm test pod is deployed"
    assert all(doc["metadata"].get("namespace", "sse-orders") == "sse-orders" for doc in run.yaml)
    # The live update writes into the containers, and the dev values turn auth off.
    for name in (names["order-api"], names["stream-gateway"]):
        [container] = run.workload(name)["spec"]["template"]["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is False
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["AUTH"] == "none"

    tests = run.local_resources["cargo-test"]
    assert tests["cmd"] == "cargo test --workspace --locked"
    assert set(workspace_members()) <= set(tests["deps"])


def test_kustomize_mode_deploys_the_dev_overlay():
    run = TiltRun({"kustomize": True}).run()
    assert [image["context"] for image in run.images] == ["target/tilt"]
    names = {"order-api": "order-api", "stream-gateway": "stream-gateway", "redis": "redis"}
    check_forwards_and_names(run, names)
    check_app_images(run)
    assert all(doc["metadata"].get("namespace") == "sse-orders" for doc in run.yaml if doc["kind"] != "Namespace")
    for name in ("order-api", "stream-gateway"):
        [container] = run.workload(name)["spec"]["template"]["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is False
        assert "new_name" not in run.resources[name]


def test_image_build_mode_builds_the_dockerfile_without_live_update():
    run = TiltRun({"image-build": True}).run()
    [image] = run.images
    assert image["context"] == "."
    assert image["dockerfile"] == "Dockerfile"
    assert "live_update" not in image
    assert set(workspace_members()) <= set(image["only"])
    assert "compile" not in run.local_resources
    for options in run.resources.values():
        assert "compile" not in options.get("resource_deps", [])


# ---- ops/tilt/restart-on-change ---------------------------------------------------------------

FAKE_BINARY = """#!/bin/sh
echo "start {version} $$ $*" >> "$LOG"
trap 'echo "stop {version} $$" >> "$LOG"; exit 0' TERM
while :; do sleep 0.1; done
"""


def wait_for(predicate, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def wrapper(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link = tmp_path / "order-api"
    link.symlink_to(ROOT / "ops/tilt/restart-on-change")
    log = tmp_path / "log"
    log.touch()

    def install(version):
        # As a sync does: a new file replaces the old one.
        new = bin_dir / "order-api.new"
        new.write_text(FAKE_BINARY.format(version=version))
        new.chmod(0o755)
        new.replace(bin_dir / "order-api")

    env = dict(os.environ, SSE_ORDERS_BIN_DIR=str(bin_dir), LOG=str(log))
    return link, install, log, env


def test_wrapper_restarts_a_replaced_binary_and_passes_sigterm_on(wrapper):
    link, install, log, env = wrapper
    install("v1")
    process = subprocess.Popen([str(link), "--flag"], env=env)
    try:
        wait_for(lambda: "start v1" in log.read_text(), "the first binary to start")
        install("v2")
        wait_for(lambda: "start v2" in log.read_text(), "the replaced binary to start")
        lines = log.read_text().splitlines()
        assert [line.split()[:2] for line in lines] == [["start", "v1"], ["stop", "v1"], ["start", "v2"]]
        assert lines[2].endswith("--flag"), "arguments are passed on after a restart"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert log.read_text().splitlines()[-1].startswith("stop v2")
    finally:
        if process.poll() is None:
            process.kill()


def test_wrapper_exits_with_the_status_of_its_binary(wrapper):
    link, install, log, env = wrapper
    install("v1")
    (pathlib.Path(env["SSE_ORDERS_BIN_DIR"]) / "order-api").write_text("#!/bin/sh\nexit 3\n")
    assert subprocess.run([str(link)], env=env, timeout=10).returncode == 3
