{{/* Chart name, overridable. */}}
{{- define "keymint.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name, plus the chart name unless the release name already
contains it. Truncated to 63 characters (DNS-1123 label).
*/}}
{{- define "keymint.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version */}}
{{- define "keymint.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of the release carries. */}}
{{- define "keymint.labels" -}}
helm.sh/chart: {{ include "keymint.chart" . }}
app.kubernetes.io/name: {{ include "keymint.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keymint
{{- end }}

{{/* Labels of the operator's objects (Deployment, pods, Service, ...). */}}
{{- define "keymint.operatorLabels" -}}
{{ include "keymint.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels that select the operator's pods (immutable in a Deployment). */}}
{{- define "keymint.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keymint.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "keymint.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keymint.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The leader-election Lease name. */}}
{{- define "keymint.leaseName" -}}
{{- default (printf "%s-leader" (include "keymint.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Namespaces RootKey Secrets may be written to (default: the release namespace). */}}
{{- define "keymint.rootKeyNamespaces" -}}
{{- if .Values.rootKeyNamespaces }}
{{- join "," (uniq .Values.rootKeyNamespaces) }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The image reference: repository, then @digest or :tag (default appVersion). */}}
{{- define "keymint.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Operator rules for the namespaces where ServiceAccountKeys and APIKeys live
(a ClusterRole in all-namespaces mode, a Role per watched namespace).
*/}}
{{- define "keymint.namespacedRules" -}}
# Secrets: read by name before a write, watched label-selected
# (app.kubernetes.io/managed-by=keymint), written by server-side apply (a
# patch; an apply that creates the Secret is also authorized as create),
# deleted when a ServiceAccountKey is revoked.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# ServiceAccounts: a ServiceAccountKey's account is read and watched.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch"]
# Events (events.k8s.io/v1): created, and patched when one repeats.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Consumers named by keys (spec.consumers): watched, and their pod-template
# annotation keymint.dev/key-<hash> server-side applied (a patch) when a key
# changes; only workloads whose pod template reads that key's Secret.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["list", "watch", "patch"]
{{- end }}

{{/* The operator's ServiceAccount as an RBAC subject. */}}
{{- define "keymint.operatorSubject" -}}
- kind: ServiceAccount
  name: {{ include "keymint.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}
