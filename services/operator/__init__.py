"""The StreamTable operator: `kubectl apply` a StreamTable resource, get a pg_trickle stream table.

Layout: `spec` (the custom resource's desired state, validated and normalised), `reconcile` (plain
functions: desired state + catalog -> pgtrickle calls -> status and conditions; testable without
Kubernetes), `handlers` (thin kopf handlers around them), `config` (environment), `main` (kopf in-process).
"""
