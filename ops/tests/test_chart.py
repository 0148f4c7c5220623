"""The Helm chart's rendered objects: what each value turns into (helm template, then assertions
on the parsed objects). ops/check.py separately lints, validates against the Kubernetes schemas
and checks that invalid values are refused."""

import base64
import os
import pathlib
import re
import shutil
import subprocess

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm/sse-orders"
HELM = os.environ.get("HELM") or shutil.which("helm") or str(ROOT / "ops/node_modules/.bin/helm")
KEY = ["--set", "jwtExistingSecret=orders-jwt"]


def render(*args, release="sse-orders", namespace="orders"):
    output = subprocess.run(
        [HELM, "template", release, str(CHART), "--namespace", namespace, *args],
        check=True, capture_output=True, text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def values_file(name):
    return ["-f", str(CHART / "ci" / f"{name}-values.yaml")]


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} rendered"
    return found


def one(docs, kind, name):
    [doc] = find(docs, kind, name)
    return doc


def container(deployment):
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(deployment):
    return {e["name"]: e for e in container(deployment)["env"]}


def secret_data(secret):
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def pod_annotations(docs, name):
    return one(docs, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]


def test_defaults_run_hardened_spread_pods_behind_network_policies():
    docs = render(*KEY)
    for name in ("sse-orders-order-api", "sse-orders-stream-gateway"):
        deployment = one(docs, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "sse-orders"
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        security = container(deployment)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        spread = pod["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)
        assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread)
        assert container(deployment)["image"] == "sse-orders:0.1.0"
    account = one(docs, "ServiceAccount", "sse-orders")
    assert account["automountServiceAccountToken"] is False
    assert {s["spec"]["type"] for s in find(docs, "Service") if "redis" not in s["metadata"]["name"]} == {"ClusterIP"}


def test_bundled_redis_has_a_password_the_services_get_inside_the_url():
    docs = render(*KEY, "--set", "redis.password=s3cret-pw")
    data = secret_data(one(docs, "Secret", "sse-orders-redis"))
    assert data == {"redis-password": "s3cret-pw", "redis-url": "redis://:s3cret-pw@sse-orders-redis:6379"}
    redis = one(docs, "StatefulSet", "sse-orders-redis")
    [server] = redis["spec"]["template"]["spec"]["containers"]
    assert server["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert {e["name"] for e in server["env"]} == {"REDIS_PASSWORD", "REDISCLI_AUTH"}
    for name in ("sse-orders-order-api", "sse-orders-stream-gateway"):
        url = env_of(one(docs, "Deployment", name))["REDIS_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "sse-orders-redis", "key": "redis-url"}
    # Without a password value, one is made up (and kept by upgrades through lookup).
    generated = secret_data(one(render(*KEY), "Secret", "sse-orders-redis"))
    assert re.fullmatch(r"[A-Za-z0-9]{32}", generated["redis-password"])


def test_network_policies_let_only_the_services_reach_redis_and_only_the_ingress_reach_the_services():
    docs = render(*KEY)
    policies = {p["metadata"]["name"]: p["spec"] for p in find(docs, "NetworkPolicy")}
    redis = policies["sse-orders-redis"]
    assert redis["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    [rule] = redis["ingress"]
    assert sorted(p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]) == [
        "order-api", "stream-gateway"]
    assert all(set(p) == {"podSelector"} for p in rule["from"]), "only pods of this namespace reach Redis"
    for component in ("order-api", "stream-gateway"):
        spec = policies[f"sse-orders-{component}"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        [rule] = spec["ingress"]
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        peers = [p["podSelector"]["matchLabels"] for p in rule["from"]]
        assert {"app.kubernetes.io/name": "ingress-nginx"} in peers
        assert {"app.kubernetes.io/name": "traefik"} in peers
        assert {"app.kubernetes.io/name": "prometheus"} in peers
    assert policies["sse-orders-test"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "sse-orders",
                                        "app.kubernetes.io/instance": "sse-orders",
                                        "app.kubernetes.io/component": "test"}},
        "policyTypes": ["Ingress"]}
    assert not [d for d in render(*KEY, "--set", "networkPolicy.enabled=false") if d["kind"] == "NetworkPolicy"]


def test_a_changed_secret_rolls_the_pods():
    def checksums(*args):
        docs = render(*args)
        return [pod_annotations(docs, n)["checksum/secrets"] for n in ("sse-orders-order-api", "sse-orders-stream-gateway")]

    base = checksums("--set", "jwtSecret=one", "--set", "redis.password=pw")
    assert base == checksums("--set", "jwtSecret=one", "--set", "redis.password=pw"), "not stable"
    assert checksums("--set", "jwtSecret=two", "--set", "redis.password=pw") != base
    assert checksums("--set", "jwtSecret=one", "--set", "redis.password=pw2") != base
    external = ["--set", "auth=none", "--set", "redis.enabled=false"]
    assert checksums(*external, "--set", "redis.url=redis://a:6379") != checksums(*external, "--set", "redis.url=redis://b:6379")


def test_names_labels_service_and_image_digest_are_values():
    docs = render(*values_file("full"), release="shop")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "orders-order-api") in names and ("Deployment", "orders-stream-gateway") in names
    gateway = one(docs, "Deployment", "orders-stream-gateway")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert labels["example.com/cost-center"] == "shop"
    assert gateway["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "shop"
    assert container(gateway)["image"] == (
        "registry.example.com/shop/sse-orders@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945")
    service = one(docs, "Service", "orders-stream-gateway")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}
    assert one(docs, "ServiceAccount", "orders")["metadata"]["annotations"]
    assert gateway["spec"]["template"]["spec"]["serviceAccountName"] == "orders"
    [spread] = gateway["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"
    renamed = render(*KEY, "--set", "nameOverride=shop-orders", release="prod")
    assert one(renamed, "Deployment", "prod-shop-orders-order-api")["metadata"]["labels"]["app.kubernetes.io/name"] == "shop-orders"


def test_security_contexts_can_be_overridden():
    docs = render(*KEY, "--set", "podSecurityContext.runAsUser=70000", "--set", "podSecurityContext.fsGroup=70000",
                  "--set", "containerSecurityContext.readOnlyRootFilesystem=false")
    pod = one(docs, "Deployment", "sse-orders-order-api")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 70000 and pod["securityContext"]["fsGroup"] == 70000
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False


def test_gateway_autoscales_on_cpu_and_on_open_streams():
    docs = render(*values_file("full"))
    hpa = one(docs, "HorizontalPodAutoscaler", "orders-stream-gateway")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    pods = metrics["Pods"]["pods"]
    assert pods["metric"]["name"] == "sse_orders_sse_connections"
    assert pods["target"] == {"type": "AverageValue", "averageValue": "4000"}
    # That is the gauge the gateway exports: prefix sse_orders, name sse_connections.
    source = (ROOT / "order-events/src/metrics.rs").read_text()
    assert 'const PREFIX: &str = "sse_orders";' in source
    assert re.search(r'IntGauge::new\(name\("sse_connections"\), "Open SSE connections"\)', source)
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    cpu_only = one(render(*KEY, "--set", "streamGateway.autoscaling.enabled=true"), "HorizontalPodAutoscaler", "sse-orders-stream-gateway")
    assert [m["type"] for m in cpu_only["spec"]["metrics"]] == ["Resource"]


def test_prometheus_rule_carries_the_alerts_and_the_release_label():
    docs = render(*values_file("full"))
    rule = one(docs, "PrometheusRule", "orders")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    alerts = yaml.safe_load((ROOT / "ops/prometheus/alerts.yaml").read_text())
    assert rule["spec"] == {"groups": alerts["spec"]["groups"]}
    names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "SseOrdersNoGatewayPod" in names
    monitor = one(docs, "ServiceMonitor", "orders")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    # kube-prometheus-stack's default release name, unless told otherwise.
    defaults = render(*KEY, "--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true")
    assert one(defaults, "PrometheusRule", "sse-orders")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert one(defaults, "ServiceMonitor", "sse-orders")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def routed(ingresses, path):
    """The backend service an ingress controller picks for a path (Exact before the longest Prefix)."""
    best = None
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                service = p["backend"]["service"]["name"]
                if p["pathType"] == "Exact" and p["path"] == path:
                    return service
                prefix = p["path"].rstrip("/")
                if p["pathType"] == "Prefix" and (path == prefix or path.startswith(prefix + "/")):
                    if best is None or len(prefix) > best[0]:
                        best = (len(prefix), service)
    return best and best[1]


def test_ingress_routes_the_api_and_stream_but_not_metrics_or_probes():
    for values in ("full", "traefik"):
        docs = render(*values_file(values))
        ingresses = find(docs, "Ingress")
        prefix = "orders" if values == "full" else "sse-orders"
        assert routed(ingresses, "/api/order/stream") == f"{prefix}-stream-gateway"
        assert routed(ingresses, "/") == f"{prefix}-stream-gateway"
        assert routed(ingresses, "/api/order") == f"{prefix}-order-api"
        assert routed(ingresses, "/api/order/01a2257f-6d1c-7c51-9a4e-2f0f5d8c3b10") == f"{prefix}-order-api"
        for private in ("/metrics", "/healthz", "/readyz", "/api/metrics", "/metrics/"):
            assert routed(ingresses, private) is None, f"{private} is reachable through the ingress"
    nginx = one(render(*values_file("full")), "Ingress", "orders-stream-gateway")
    assert nginx["spec"]["ingressClassName"] == "nginx"
    assert nginx["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    traefik = find(render(*values_file("traefik")), "Ingress")
    assert {i["spec"]["ingressClassName"] for i in traefik} == {"traefik"}
    for ingress in traefik:
        annotations = ingress["metadata"].get("annotations", {})
        assert not [a for a in annotations if a.startswith("nginx.")], annotations


def test_auth_values_become_the_flags_environment():
    full = env_of(one(render(*values_file("full")), "Deployment", "orders-order-api"))
    assert full["AUTH"]["value"] == "jwt"
    assert full["JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "orders-jwt", "key": "jwt-secret"}
    assert full["JWT_ISSUER"]["value"] == "https://shop.example.com/"
    assert full["CORS_ORIGINS"]["value"] == "https://shop.example.com"
    assert full["HEADER_READ_TIMEOUT"]["value"] == "3s" and full["IDLE_TIMEOUT"]["value"] == "20s"
    assert "JWT_PUBLIC_KEY_FILE" not in full

    jwks = env_of(one(render(*values_file("external-redis")), "Deployment", "sse-orders-stream-gateway"))
    assert jwks["JWT_JWKS_URL"]["value"] == "https://login.example.com/.well-known/jwks.json"
    assert jwks["JWT_JWKS_REFRESH"]["value"] == "10m"
    assert jwks["JWT_AUDIENCE"]["value"] == "sse-orders"
    assert jwks["CORS_ORIGINS"]["value"] == "https://shop.example.com,https://backoffice.example.com"
    assert "JWT_SECRET" not in jwks

    for values, secret in (("cluster", "sse-orders-jwt"), ("sentinel", "orders-jwt")):
        docs = render(*values_file(values))
        gateway = one(docs, "Deployment", "sse-orders-stream-gateway")
        env = env_of(gateway)
        assert env["JWT_PUBLIC_KEY_FILE"]["value"] == "/etc/sse-orders/jwt/jwt-public-key"
        assert "JWT_SECRET" not in env
        [volume] = gateway["spec"]["template"]["spec"]["volumes"]
        assert volume["secret"] == {"secretName": secret, "items": [{"key": "jwt-public-key", "path": "jwt-public-key"}]}
        assert container(gateway)["volumeMounts"] == [{"name": "jwt", "mountPath": "/etc/sse-orders/jwt", "readOnly": True}]
    inline = secret_data(one(render(*values_file("cluster")), "Secret", "sse-orders-jwt"))
    assert inline["jwt-public-key"].startswith("-----BEGIN PUBLIC KEY-----")

    dev = env_of(one(render(*values_file("dev")), "Deployment", "sse-orders-order-api"))
    assert dev["AUTH"]["value"] == "none"
    assert not [name for name in dev if name.startswith("JWT_")]
    assert not [d for d in render(*values_file("dev")) if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-jwt")]


def test_helm_test_pod_expects_a_refusal_without_a_token_when_auth_is_on():
    def script(*args):
        [pod] = [d for d in render(*args) if d["kind"] == "Pod"]
        return pod["spec"]["containers"][0]["args"][0]

    with_auth = script(*KEY)
    assert "grep -q ' 401'" in with_auth and "application/problem+json" in with_auth
    assert "grep -q ' 200'" not in with_auth
    without = script("--set", "auth=none")
    assert "grep -q ' 200'" in without and "^retry: " in without


def test_http_route_sends_the_stream_without_timeout_and_keeps_metrics_private():
    docs = render(*values_file("gateway-api"))
    route = one(docs, "HTTPRoute", "sse-orders")
    assert route["spec"]["parentRefs"] == [{"name": "shared", "namespace": "gateways", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["orders.example.com"]
    rules = route["spec"]["rules"]
    by_backend = {rule["backendRefs"][0]["name"]: rule for rule in rules}
    stream = by_backend["sse-orders-stream-gateway"]
    assert {(m["path"]["type"], m["path"]["value"]) for m in stream["matches"]} == {("Exact", "/api/order/stream"), ("Exact", "/")}
    assert stream["timeouts"] == {"request": "0s", "backendRequest": "0s"}
    api = by_backend["sse-orders-order-api"]
    assert [(m["path"]["type"], m["path"]["value"]) for m in api["matches"]] == [("PathPrefix", "/api/order")]
    assert all(r["backendRefs"][0]["port"] == 8080 for r in rules)
    assert not [d for d in docs if d["kind"] == "Ingress"]
    # Every match is one of those three: nothing else (/metrics, /healthz, /readyz) is routed.
    values = [m["path"]["value"] for r in rules for m in r["matches"]]
    assert sorted(values) == ["/", "/api/order", "/api/order/stream"]
