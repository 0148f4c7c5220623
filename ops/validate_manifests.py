"""Validates rendered Kubernetes manifests, strictly (unknown fields are errors), for each
Kubernetes version given.

Built-in kinds go through kubernetes-validate (its bundled schemas, strict variant). The
Prometheus Operator kinds (ServiceMonitor, PrometheusRule), for which it has no schema, go
through ops/schemas/<kind>.json: JSON schemas of the CRD fields the chart uses, with unknown
fields refused. ops/validate_crds.mjs checks the same documents against the complete CRD schemas
of the @kubernetes-models/prometheus-operator package (types, patterns, required fields).
A kind with no schema at all is an error, never a warning.

    python ops/validate_manifests.py --kubernetes-version 1.25.0 --kubernetes-version 1.37.0 FILE...
"""

import argparse
import json
import pathlib
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

SCHEMAS = pathlib.Path(__file__).parent / "schemas"
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}


def documents(path):
    with open(path) as file:
        return [doc for doc in yaml.safe_load_all(file) if doc]


def name_of(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def validate_custom(doc, schema_file):
    schema = json.loads((SCHEMAS / schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", action="append", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    problems = []
    checked = 0
    for path in args.files:
        for doc in documents(path):
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in CUSTOM_KINDS:
                for error in validate_custom(doc, CUSTOM_KINDS[key]):
                    problems.append(f"{path}: {name_of(doc)}: {error}")
                checked += 1
                continue
            for version in args.kubernetes_version:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as error:
                    where = ".".join(str(p) for p in error.path)
                    problems.append(f"{path}: {name_of(doc)} (Kubernetes {version}): {where}: {error.message}")
                except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as error:
                    problems.append(f"{path}: {name_of(doc)} (Kubernetes {version}): {error.message}")
                except kv.VersionNotSupportedError:
                    problems.append(f"kubernetes-validate has no schemas for Kubernetes {version}")
            checked += 1
    for problem in problems:
        print("PROBLEM:", problem)
    versions = ", ".join(args.kubernetes_version)
    names = ", ".join(pathlib.Path(f).name for f in args.files)
    print(f"{names}: {checked} documents, Kubernetes {versions}: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
