{{/* Names and labels, shared by every template of the chart. */}}

{{/* The CoderPlatform's name: the release name unless overridden (its children are `<name>-<component>`). */}}
{{- define "coder-platform.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "coder-platform.version" -}}
{{- .Values.version | default .Chart.AppVersion }}
{{- end }}

{{- define "coder-platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: coder-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "coder-platform.version" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
