{{/* The chart name, or nameOverride. */}}
{{- define "gsd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "gsd.fullname" -}}
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

{{- define "gsd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource; pass (dict "ctx" $ "component" "server"). */}}
{{- define "gsd.labels" -}}
helm.sh/chart: {{ include "gsd.chart" .ctx }}
{{ include "gsd.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: gsd
{{- end }}

{{/* Selector labels; the component tells server, client and test apart. */}}
{{- define "gsd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gsd.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "gsd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The server Service's name and the client's URL of it. */}}
{{- define "gsd.serverService" -}}
{{- include "gsd.fullname" . }}
{{- end }}

{{- define "gsd.serverUrl" -}}
{{- printf "ws://%s.%s.svc.%s:%v/ws" (include "gsd.serverService" .) .Release.Namespace .Values.clusterDomain .Values.service.port }}
{{- end }}

{{/*
The termination budget: the grace period counts from the start of preStop,
so it must cover preStop + the drain + the metrics linger + a margin.
*/}}
{{- define "gsd.validate" -}}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring.serviceMonitor.enabled and monitoring.podMonitor.enabled are alternatives: enable one, or every pod is scraped twice" }}
{{- end }}
{{- $s := .Values.server }}
{{- $prestop := 0 }}
{{- if ne $s.preStop.mode "none" }}{{ $prestop = int $s.preStop.sleepSeconds }}{{ end }}
{{- $budget := add $prestop (int $s.drainTimeoutSeconds) (int $s.metricsLingerSeconds) (int $s.terminationMarginSeconds) }}
{{- if le (int $s.terminationGracePeriodSeconds) $budget }}
{{- fail (printf "server.terminationGracePeriodSeconds (%d) must be larger than preStop.sleepSeconds (%d) + drainTimeoutSeconds (%d) + metricsLingerSeconds (%d) + terminationMarginSeconds (%d) = %d: the kubelet would SIGKILL a drain in progress" (int $s.terminationGracePeriodSeconds) $prestop (int $s.drainTimeoutSeconds) (int $s.metricsLingerSeconds) (int $s.terminationMarginSeconds) $budget) }}
{{- end }}
{{- end }}

{{/* The preStop hook: native sleep where the cluster has it (>= 1.30), else httpGet. */}}
{{- define "gsd.preStop" -}}
{{- $mode := .Values.server.preStop.mode }}
{{- if eq $mode "auto" }}
{{- $mode = ternary "sleep" "httpGet" (semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if eq $mode "sleep" }}
preStop:
  sleep:
    seconds: {{ int .Values.server.preStop.sleepSeconds }}
{{- else if eq $mode "httpGet" }}
preStop:
  httpGet:
    path: /prestop?sleep={{ int .Values.server.preStop.sleepSeconds }}s
    port: http
{{- end }}
{{- end }}

{{/* NAME: value map to an env list. */}}
{{- define "gsd.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "gsd.otlpEnv" -}}
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- end }}
