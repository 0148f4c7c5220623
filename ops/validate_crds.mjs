// Validates the ServiceMonitor and PrometheusRule documents of rendered manifests against the
// complete Prometheus Operator CRD schemas of @kubernetes-models/prometheus-operator (field
// types, patterns, enums, required fields). ops/validate_manifests.py adds the strict check
// that no unknown field is present.
//
//   ... | node ops/validate_crds.mjs     (one {"file", "doc"} JSON object a line on stdin; see ops/check.sh)
import { readFileSync } from "node:fs";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = { ServiceMonitor, PrometheusRule };
const lines = readFileSync(0, "utf8").split("\n").filter((line) => line.trim());
let problems = 0;
let checked = 0;
for (const line of lines) {
  const { file, doc } = JSON.parse(line);
  const Model = models[doc.kind];
  if (doc.apiVersion !== "monitoring.coreos.com/v1" || !Model) continue;
  checked += 1;
  try {
    new Model(doc).validate();
  } catch (error) {
    problems += 1;
    console.log(`PROBLEM: ${file}: ${doc.kind}/${doc.metadata?.name}: ${error.message}`);
  }
}
console.log(`${checked} Prometheus Operator documents: ${problems} problems`);
process.exit(problems ? 1 : 0);
