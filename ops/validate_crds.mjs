// Validates the ServiceMonitor, PrometheusRule and HTTPRoute documents of rendered manifests
// against the complete CRD schemas of @kubernetes-models/prometheus-operator and
// @kubernetes-models/gateway-api (field types, patterns, enums, required fields).
// ops/validate_manifests.py adds the strict check that no unknown field is present.
//
//   ... | node ops/validate_crds.mjs     (one {"file", "doc"} JSON object a line on stdin; see ops/check.py)
import { readFileSync } from "node:fs";
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "monitoring.coreos.com/v1": { ServiceMonitor, PrometheusRule },
  "gateway.networking.k8s.io/v1": { HTTPRoute },
};
const lines = readFileSync(0, "utf8").split("\n").filter((line) => line.trim());
let problems = 0;
let checked = 0;
for (const line of lines) {
  const { file, doc } = JSON.parse(line);
  const Model = models[doc.apiVersion]?.[doc.kind];
  if (!Model) continue;
  checked += 1;
  try {
    new Model(doc).validate();
  } catch (error) {
    problems += 1;
    console.log(`PROBLEM: ${file}: ${doc.kind}/${doc.metadata?.name}: ${error.message}`);
  }
}
console.log(`${checked} custom resources (Prometheus Operator, Gateway API): ${problems} problems`);
process.exit(problems ? 1 : 0);
