{{/* The operator's cluster-wide rules (it watches MutrDeployments in every namespace). */}}
{{- define "mutr.operator.clusterRules" -}}
- apiGroups: ["mutr.io"]
  resources: ["mutrdeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["mutr.io"]
  resources: ["mutrdeployments/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Leader election, in the operator's namespace. */}}
{{- define "mutr.operator.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "patch", "update"]
{{- end -}}
