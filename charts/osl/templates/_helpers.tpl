{{/*
Names and labels. Every helper takes the osl chart's scope: `.` inside this
chart, `.Subcharts.osl` from a chart that depends on osl.
*/}}

{{- define "osl.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "osl.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "osl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "osl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "osl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "osl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount of pods that carry the sidecar. */}}
{{- define "osl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "osl.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The agent image; the tag defaults to the chart's appVersion. */}}
{{- define "osl.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
The Linux capabilities each level adds (after dropping ALL), as a JSON list.
Fails on an unknown level. Why each one: see `level` in values.yaml.
*/}}
{{- define "osl.capabilities" -}}
{{- $byLevel := dict
      "basic" (list)
      "ptrace" (list "SYS_PTRACE" "DAC_READ_SEARCH")
      "ebpf" (list "SYS_PTRACE" "DAC_READ_SEARCH" "BPF" "PERFMON") }}
{{- $level := .Values.level | toString }}
{{- if not (hasKey $byLevel $level) }}
{{- fail (printf "osl: level must be basic, ptrace or ebpf, not %q" $level) }}
{{- end }}
{{- get $byLevel $level | toJson }}
{{- end }}
