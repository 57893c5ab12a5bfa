{{/* Names and labels, the prometheus-community way: every template uses these, none spells a name. */}}

{{- define "coder-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* `<release>-<chart>`, or the release name alone when it already contains the chart name. */}}
{{- define "coder-operator.fullname" -}}
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

{{- define "coder-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* What a workload selects its pods by: never changes between upgrades (selectors are immutable). */}}
{{- define "coder-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coder-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "coder-operator.labels" -}}
helm.sh/chart: {{ include "coder-operator.chart" . }}
{{ include "coder-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ include "coder-operator.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coder-platform
{{- end }}

{{- define "coder-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coder-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "coder-operator.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "coder-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "coder-operator.tag" .) }}
{{- end }}

{{/* The operator's rules (generated from coder/operator/deploy.py), shared by ClusterRole and Roles. */}}
{{- define "coder-operator.rules" -}}
{{ .Files.Get "files/rbac-rules.yaml" }}
{{- end }}
