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

{{/* A label map as a selector string: k=v,k=v (sorted). */}}
{{- define "gsd.selectorString" -}}
{{- $terms := list }}
{{- range $k, $v := . }}{{ $terms = append $terms (printf "%s=%s" $k $v) }}{{ end }}
{{- join "," $terms }}
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
so it must cover preStop + the drain + the close handshakes + the metrics
linger + a margin. Also the values the server would refuse at start (a
crash loop), checked here with the server's own rules.
*/}}
{{- define "gsd.validate" -}}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring.serviceMonitor.enabled and monitoring.podMonitor.enabled are alternatives: enable one, or every pod is scraped twice" }}
{{- end }}
{{- $s := .Values.server }}
{{- $prestop := 0 }}
{{- if ne $s.preStop.mode "none" }}{{ $prestop = int $s.preStop.sleepSeconds }}{{ end }}
{{- $budget := add $prestop (int $s.drainTimeoutSeconds) (int $s.closeTimeoutSeconds) (int $s.metricsLingerSeconds) (int $s.terminationMarginSeconds) }}
{{- if le (int $s.terminationGracePeriodSeconds) $budget }}
{{- fail (printf "server.terminationGracePeriodSeconds (%d) must be larger than preStop.sleepSeconds (%d) + drainTimeoutSeconds (%d) + closeTimeoutSeconds (%d) + metricsLingerSeconds (%d) + terminationMarginSeconds (%d) = %d: the kubelet would SIGKILL a drain in progress" (int $s.terminationGracePeriodSeconds) $prestop (int $s.drainTimeoutSeconds) (int $s.closeTimeoutSeconds) (int $s.metricsLingerSeconds) (int $s.terminationMarginSeconds) $budget) }}
{{- end }}
{{- if ge (int $s.drainPacingSeconds) (int $s.drainTimeoutSeconds) }}
{{- fail (printf "server.drainPacingSeconds (%d) must be shorter than server.drainTimeoutSeconds (%d): the last notices would go out after the drain deadline" (int $s.drainPacingSeconds) (int $s.drainTimeoutSeconds)) }}
{{- end }}
{{- $range := splitList "-" (nospace (toString $s.drainMessages)) }}
{{- $min := int (first $range) }}
{{- $max := int (last $range) }}
{{- if gt $min $max }}
{{- fail (printf "server.drainMessages %q: MIN %d is larger than MAX %d" (toString $s.drainMessages) $min $max) }}
{{- end }}
{{- if gt $max 10000 }}
{{- fail (printf "server.drainMessages %q: MAX %d is over the server's limit of 10000" (toString $s.drainMessages) $max) }}
{{- end }}
{{- include "gsd.checkExtraEnv" (dict "env" $s.extraEnv "owned" (include "gsd.serverEnvNames" .) "key" "server.extraEnv") }}
{{- include "gsd.checkExtraEnv" (dict "env" .Values.client.extraEnv "owned" (include "gsd.clientEnvNames" .) "key" "client.extraEnv") }}
{{- if .Values.monitoring.prometheusRule.enabled }}
{{- if not (regexMatch "^https?://[^/]+" .Values.monitoring.prometheusRule.runbookBaseUrl) }}
{{- fail (printf "monitoring.prometheusRule.runbookBaseUrl %q must be an absolute http(s) URL: a relative runbook link is dead in Alertmanager, Slack or PagerDuty" .Values.monitoring.prometheusRule.runbookBaseUrl) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The environment variables the chart sets itself, one name a line; extraEnv
may not set them (an extraEnv DRAIN_TIMEOUT would slip past the budget check).
*/}}
{{- define "gsd.serverEnvNames" -}}
PORT POD_NAME DRAIN_TIMEOUT METRICS_LINGER DRAIN_MESSAGES DRAIN_PACING CLOSE_TIMEOUT PING_INTERVAL PING_TIMEOUT PUSH_INTERVAL PROCESSING_LATENCY MAX_SESSIONS LOG_FORMAT OTEL_SERVICE_NAME OTEL_EXPORTER_OTLP_ENDPOINT
{{- end }}

{{- define "gsd.clientEnvNames" -}}
SERVER_URL CLIENTS REQUEST_INTERVAL PROCESSING_TIME MAKE_BEFORE_BREAK RECONNECT_JITTER RECONNECT_BACKOFF_BASE RECONNECT_BACKOFF_CAP PING_INTERVAL PING_TIMEOUT METRICS_PORT LOG_FORMAT OTEL_SERVICE_NAME OTEL_EXPORTER_OTLP_ENDPOINT
{{- end }}

{{/* Fails on an extraEnv entry whose name the chart owns, or that is given twice. */}}
{{- define "gsd.checkExtraEnv" -}}
{{- $owned := splitList " " .owned }}
{{- $seen := list }}
{{- range .env }}
{{- if has .name $owned }}
{{- fail (printf "%s: %s is set by the chart; use its value instead (see values.yaml), extraEnv may not override %s" $.key .name (join ", " $owned)) }}
{{- end }}
{{- if has .name $seen }}
{{- fail (printf "%s: %s is given twice" $.key .name) }}
{{- end }}
{{- $seen = append $seen .name }}
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

{{/* imagePullSecrets of every pod, as given ([{name: ...}]). */}}
{{- define "gsd.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Labels of the monitors and rules: the chart's, then monitoring.labels, then
the kind's own (later wins). Pass (dict "ctx" $ "component" "server" "own" labels).
*/}}
{{- define "gsd.monitoringLabels" -}}
{{- $labels := include "gsd.labels" . | fromYaml }}
{{- $labels = mergeOverwrite $labels (deepCopy (default dict .ctx.Values.monitoring.labels)) (deepCopy (default dict .own)) }}
{{- toYaml $labels }}
{{- end }}

{{- define "gsd.otlpEnv" -}}
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- end }}
