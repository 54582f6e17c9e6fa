{{/*
The operator's rules: exactly the table in operator/README.md ("RBAC"). hack/checks/deploy.sh fails
when this, manifests/base/rbac.yaml and that table differ.
*/}}

{{/* Cluster-wide (or per watched namespace) rules. */}}
{{- define "mutr.operator.clusterRules" -}}
# The controller's watch.
- apiGroups: ["mutr.io"]
  resources: ["mutrdeployments"]
  verbs: ["list", "watch"]
# The status subresource (server-side apply).
- apiGroups: ["mutr.io"]
  resources: ["mutrdeployments/status"]
  verbs: ["patch"]
# Per-colour Deployments: server-side apply, replica patches, watch of owned objects.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Per-colour AI Services and the stable mutr-api / mutr-api-preview Services.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Migrate, activate and recover Jobs (created once, never patched).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
# Count a colour's pods; read the recover Job pod's termination message.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# An Event per decision (patch aggregates repeats into a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Optional objects per colour (server-side apply; deleted when turned off in the spec): disruption
# budgets, the AI server's NetworkPolicy, the API's HorizontalPodAutoscaler, the AI server's KEDA
# ScaledObject, ServiceMonitors.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["create", "patch", "delete"]
{{- end -}}

{{/* Leader election, in the operator's own namespace. */}}
{{- define "mutr.operator.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "patch"]
{{- end -}}
