{{/*
The operator's RBAC rules: only the verbs it calls (tests/cluster/test_rbac_operator.py checks each
one with `kubectl auth can-i` and runs the operator's API calls as its ServiceAccount).
*/}}

{{/* Cluster-scoped reads of kopf: it watches CRDs to notice the resource appearing or changing. */}}
{{- define "tierscale.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
# With --namespace, kopf lists and watches namespaces to notice the watched ones appearing (the
# demo and the end-to-end test run the operator with --namespace on the cluster-wide RBAC too).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}

{{/* Rules on namespaced objects, granted where the operator watches. */}}
{{- define "tierscale.namespacedRules" -}}
# kopf watches the resources, adds its finalizer and progress annotations, and writes the status.
- apiGroups: [tierscale.io]
  resources: [recommenderdeployments]
  verbs: [list, watch, patch]
- apiGroups: [tierscale.io]
  resources: [recommenderdeployments/status]
  verbs: [patch]
# One Deployment per tier: created, its pod template patched, deleted when the tier leaves the spec.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, create, patch, delete]
# Replica changes go through the scale subresource (read, then replace with its resourceVersion).
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, update]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
# The policy-state ConfigMap (read, created, replaced) and the ConfigMap named by spec.policy.initialTable.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update]
# Readiness and Pending reasons of the model-server pods.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# One control loop per resource: a Lease per resource, read, created and renewed.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
# Events on the resources (kopf posts them through the core API).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Rules of the pre-delete hook (see cleanup.yaml). */}}
{{- define "tierscale.cleanupRules" -}}
- apiGroups: [tierscale.io]
  resources: [recommenderdeployments]
  verbs: [list, delete, patch]
{{- end }}
