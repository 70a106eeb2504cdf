{{/*
osl.sidecar: the osl-agent container, one item of your pod's `containers:` list.

Give it the osl chart's scope: `.` inside this chart; from your own chart,
with osl as a dependency (Chart.yaml `dependencies:`), `.Subcharts.osl`, so
that the osl values you set under `osl:` apply:

  spec:
    template:
      metadata:
        annotations:
          {{- include "osl.podAnnotations" .Subcharts.osl | nindent 10 }}
      spec:
        shareProcessNamespace: true
        serviceAccountName: {{ include "osl.serviceAccountName" .Subcharts.osl }}
        containers:
          - name: app
            ...
          {{- include "osl.sidecar" .Subcharts.osl | nindent 10 }}
        volumes:
          {{- include "osl.sidecarVolumes" .Subcharts.osl | nindent 10 }}

Your pod also needs:
- the annotation `osl.dev/agent-port: "7450"` in its metadata (what
  osl.podAnnotations writes): kubectl osl finds the agent by it, or by the
  container name osl-agent, and port-forwards to that port;
- `shareProcessNamespace: true`, or the agent sees only itself;
- the volumes of osl.sidecarVolumes (the report emptyDir);
- for Events, a ServiceAccount bound to the osl Role: the chart's own
  (osl.serviceAccountName) or one listed in rbac.extraServiceAccounts;
- at level basic, your app running as the agent's `runAsUser`, for its fds and smaps.
*/}}
{{- define "osl.sidecar" -}}
{{- $caps := include "osl.capabilities" . | fromJsonArray }}
{{- $root := ne (.Values.level | toString) "basic" }}
{{- $logFormat := .Values.logFormat | toString }}
{{- if not (has $logFormat (list "text" "json")) }}
{{- fail (printf "osl: logFormat must be text or json, not %q" $logFormat) }}
{{- end }}
{{- $port := .Values.port | int }}
{{- $probes := .Values.probes.enabled | default false }}
{{- $healthPort := .Values.probes.healthPort | default 7451 | int -}}
- name: osl-agent
  image: {{ include "osl.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/osl-agent"]
  args: ["serve"]
  ports:
    - name: osl-grpc
      containerPort: {{ $port }}
      protocol: TCP
    {{- if $probes }}
    - name: osl-health
      containerPort: {{ $healthPort }}
      protocol: TCP
    {{- end }}
  env:
    - name: OSL_LISTEN
      value: {{ printf "127.0.0.1:%d" $port | quote }}
    {{- if $probes }}
    - name: OSL_HEALTH_LISTEN
      value: {{ printf "%s:%d" (.Values.probes.listenHost | toString) $healthPort | quote }}
    {{- end }}
    - name: OSL_LOG_FORMAT
      value: {{ $logFormat | quote }}
    - name: OSL_REPORT_DIR
      value: /var/run/osl/reports
    - name: OSL_MAX_REPORTS
      value: {{ .Values.reports.maxReports | int64 | toString | quote }}
    - name: OSL_MAX_REPORT_BYTES
      value: {{ .Values.reports.maxReportBytes | int64 | toString | quote }}
    {{- if not .Values.preOOM.enabled }}
    - name: OSL_NO_WATCH
      value: "true"
    {{- end }}
    - name: OSL_PRE_OOM_WARN_PCT
      value: {{ .Values.preOOM.warnPct | toString | quote }}
    - name: OSL_PRE_OOM_CRITICAL_PCT
      value: {{ .Values.preOOM.criticalPct | toString | quote }}
    - name: OSL_PRE_OOM_PREDICT
      value: {{ .Values.preOOM.predict | toString | quote }}
    - name: OSL_PRE_OOM_COOLDOWN
      value: {{ .Values.preOOM.cooldown | toString | quote }}
    - name: OSL_PRE_OOM_POLL
      value: {{ .Values.preOOM.poll | toString | quote }}
    - name: OSL_MAX_PROFILE_DURATION
      value: {{ .Values.profile.maxDuration | toString | quote }}
    - name: OSL_EVENTS
      value: {{ ternary "auto" "off" (.Values.events.enabled | default false) | quote }}
    - name: OSL_POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: OSL_POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: OSL_POD_UID
      valueFrom:
        fieldRef:
          fieldPath: metadata.uid
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumeMounts:
    - name: osl-reports
      mountPath: /var/run/osl/reports
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    privileged: false
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    {{- if $root }}
    runAsNonRoot: false
    runAsUser: 0
    {{- else }}
    runAsNonRoot: true
    runAsUser: {{ .Values.runAsUser | int64 }}
    {{- end }}
    capabilities:
      drop: ["ALL"]
      {{- with $caps }}
      add: {{ toJson . }}
      {{- end }}
    {{- with .Values.seccompProfile }}
    seccompProfile:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- if .Values.probes.enabled }}
  livenessProbe:
    grpc:
      port: {{ $healthPort }}
    initialDelaySeconds: 5
    periodSeconds: 20
    timeoutSeconds: 5
    failureThreshold: 3
  {{- end }}
  terminationMessagePolicy: FallbackToLogsOnError
{{- end }}

{{/* osl.sidecarVolumes: the items osl.sidecar needs in your pod's `volumes:` list. */}}
{{- define "osl.sidecarVolumes" -}}
- name: osl-reports
  emptyDir:
    sizeLimit: {{ .Values.reports.sizeLimit | toString | quote }}
{{- end }}

{{/* osl.podAnnotations: the annotations kubectl osl looks for, for your pod's metadata. */}}
{{- define "osl.podAnnotations" -}}
osl.dev/agent-port: {{ .Values.port | int | toString | quote }}
{{- end }}
