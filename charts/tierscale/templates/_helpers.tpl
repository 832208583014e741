{{/* Chart name, or nameOverride. */}}
{{- define "tierscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of object names: fullnameOverride, else the release name when it already contains the chart
name, else "<release>-<name>". Names get "-operator" or "-cleanup" appended, so the prefix is cut at
52 characters to keep them within 63.
*/}}
{{- define "tierscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tierscale.operatorName" -}}
{{- printf "%s-operator" (include "tierscale.fullname" .) }}
{{- end }}

{{- define "tierscale.cleanupName" -}}
{{- printf "%s-cleanup" (include "tierscale.fullname" .) }}
{{- end }}

{{- define "tierscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tierscale.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tierscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "tierscale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "tierscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's pods; they never change between releases. */}}
{{- define "tierscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tierscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}
