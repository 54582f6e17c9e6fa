{{/*
Names, labels and the security settings every container of this chart gets.
*/}}

{{- define "mutr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mutr.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mutr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "mutr.labels" -}}
helm.sh/chart: {{ include "mutr.chart" .ctx }}
{{ include "mutr.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: mutr
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: stable for the life of a release. Call with (dict "ctx" $ "component" "..."). */}}
{{- define "mutr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mutr.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mutr.operator.fullname" -}}
{{- printf "%s-operator" (include "mutr.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mutr.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "mutr.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mutr.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "mutr.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mutr.postgresql.secretName" -}}
{{- default (include "mutr.postgresql.fullname" .) .Values.postgresql.auth.existingSecret -}}
{{- end -}}

{{- define "mutr.redis.fullname" -}}
{{- printf "%s-redis" (include "mutr.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mutr.redis.secretName" -}}
{{- default (include "mutr.redis.fullname" .) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{/*
An image reference from (dict "image" .Values.x.image "ctx" $): repository, then @digest when set,
else :tag, else :appVersion.
*/}}
{{- define "mutr.image" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}
{{- $repo = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/*
Pod-level security context. Call with a numeric uid/gid: (dict "uid" 65532 "gid" 65532).
*/}}
{{- define "mutr.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
fsGroup: {{ .gid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context: the same for every container of this chart. */}}
{{- define "mutr.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mutr.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
A generated secret value that survives upgrades: the existing Secret's key when there is one (a real
install or upgrade, where `lookup` reaches the cluster), else fresh random characters.
Call with (dict "ctx" $ "secret" "<name>" "key" "<key>" "length" 32).
*/}}
{{- define "mutr.generatedValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum (int .length) -}}
{{- end -}}
{{- end -}}

{{/* Names of the Ingress and its companions (BackendConfig, FrontendConfig, ManagedCertificate). */}}
{{- define "mutr.ingress.name" -}}
{{- printf "%s-api" (include "mutr.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mutr.ingress.backendConfigName" -}}
{{- include "mutr.ingress.name" . -}}
{{- end -}}

{{- define "mutr.ingress.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "mutr.fullname" .)) .Values.ingress.tls.secretName -}}
{{- end -}}

{{/*
The pods the operator builds for the MutrDeployment that may reach a database: its API and its
migrate/activate/recover Jobs, and with (dict "ctx" $ "ai" true) its AI server (the Redis result
cache). A NetworkPolicy `from` peer. The instance is mutrDeployment.name, also for a resource you
create yourself under that name.
*/}}
{{- define "mutr.clientPeer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ .ctx.Values.mutrDeployment.name }}
      app.kubernetes.io/managed-by: mutr-operator
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values: [api, migrate, activate, recover{{ if .ai }}, ai-server{{ end }}]
{{- end -}}
