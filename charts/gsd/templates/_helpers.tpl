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

{{/* The client's SERVER_URL: client.serverUrl (a proxy) or the server Service. */}}
{{- define "gsd.serverUrl" -}}
{{- if .Values.client.serverUrl }}
{{- .Values.client.serverUrl }}
{{- else }}
{{- printf "ws://%s.%s.svc.%s:%v/ws" (include "gsd.serverService" .) .Release.Namespace .Values.clusterDomain .Values.service.port }}
{{- end }}
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
{{- if eq (int $s.port) (int $s.adminPort) }}
{{- fail (printf "server.adminPort (%d) must differ from server.port: the admin endpoints must stay off the Service" (int $s.adminPort)) }}
{{- end }}
{{- $_ := include "gsd.maxSessions" . }}
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
{{- range $key, $variable := include "gsd.faults" . | fromYaml }}
{{- $n := int (index $.Values.faults $key) }}
{{- if and (gt $n 0) (not $.Values.faults.enabled) }}
{{- fail (printf "faults.%s (%d) sets %s, FAULT INJECTION that makes the servers lose messages or cut sessions on purpose: set faults.enabled=true to allow it" $key $n $variable) }}
{{- end }}
{{- end }}
{{- if and (include "gsd.deprecatedClients" .) (ne (int .Values.client.users) 10) }}
{{- fail (printf "client.clients (%d) is the deprecated name of client.users (%d): set only client.users" (int .Values.client.clients) (int .Values.client.users)) }}
{{- end }}
{{- include "gsd.validateVia" . }}
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
PORT ADMIN_PORT HTTP_HEADER_TIMEOUT HTTP_IDLE_TIMEOUT MAX_HTTP_CONNECTIONS POD_NAME DRAIN_TIMEOUT METRICS_LINGER DRAIN_MESSAGES DRAIN_PACING CLOSE_TIMEOUT PING_INTERVAL PING_TIMEOUT PUSH_INTERVAL PROCESSING_LATENCY MAX_SESSIONS RESUME_WINDOW RESUME_MAX_BYTES RESUME_KEY_FILE POD_IP LOG_FORMAT OTEL_SERVICE_NAME OTEL_EXPORTER_OTLP_ENDPOINT {{ include "gsd.faults" . | fromYaml | values | sortAlpha | join " " }}
{{- end }}

{{/*
The fault injections, values key: the server's variable. Refused unless
faults.enabled (gsd.validate), and owned by the chart so that extraEnv cannot
slip one past that guard.
*/}}
{{- define "gsd.faults" -}}
dropOwed: FAULT_DROP_OWED
resetAtSigterm: FAULT_RESET_AT_SIGTERM
closeLastSeqLower: FAULT_CLOSE_LAST_SEQ_LOWER
{{- end }}

{{/*
"true" when client.clients, the deprecated name of client.users, is set
(still honoured in this release, with a warning in NOTES.txt), else "".
Beside a client.users other than its default of 10 it fails (gsd.validate):
which of the two was meant cannot be told. (A client.users set to 10 itself
cannot be told from the default: then client.clients wins, and the notes
say so.)
*/}}
{{- define "gsd.deprecatedClients" -}}
{{- if and (hasKey .Values.client "clients") (not (kindIs "invalid" .Values.client.clients)) }}true{{ end }}
{{- end }}

{{/* USERS: client.users, or the deprecated client.clients when it is set. */}}
{{- define "gsd.clientUsers" -}}
{{- int (ternary .Values.client.clients .Values.client.users (eq (include "gsd.deprecatedClients" .) "true")) }}
{{- end }}

{{- define "gsd.clientEnvNames" -}}
SERVER_URL USERS CLIENTS REQUEST_INTERVAL PROCESSING_TIME MAKE_BEFORE_BREAK RECONNECT_JITTER RECONNECT_BACKOFF_BASE RECONNECT_BACKOFF_CAP PING_INTERVAL PING_TIMEOUT METRICS_PORT LOG_FORMAT OTEL_SERVICE_NAME OTEL_EXPORTER_OTLP_ENDPOINT
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
    port: admin
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

{{/*
A memory quantity (resources.limits.memory) in MiB, rounded down. Takes the
integer forms: plain bytes, K/M/G (powers of 1000) and Ki/Mi/Gi.
*/}}
{{- define "gsd.memoryMiB" -}}
{{- $q := toString . }}
{{- if not (regexMatch "^[0-9]+(Ki|Mi|Gi|K|M|G)?$" $q) }}
{{- fail (printf "server.resources.limits.memory %q: server.maxSessions auto reads only whole numbers with Ki, Mi, Gi, K, M or G" $q) }}
{{- end }}
{{- $n := regexFind "^[0-9]+" $q | int64 }}
{{- if hasSuffix "Gi" $q }}{{ mul $n 1024 }}
{{- else if hasSuffix "Mi" $q }}{{ $n }}
{{- else if hasSuffix "Ki" $q }}{{ div $n 1024 }}
{{- else if hasSuffix "G" $q }}{{ div (mul $n 1000000000) 1048576 }}
{{- else if hasSuffix "M" $q }}{{ div (mul $n 1000000) 1048576 }}
{{- else if hasSuffix "K" $q }}{{ div (mul $n 1000) 1048576 }}
{{- else }}{{ div $n 1048576 }}
{{- end }}
{{- end }}

{{/*
"true" when session resume is on (server.resume.windowSeconds > 0), else "".
*/}}
{{- define "gsd.resumeOn" -}}
{{- if gt (int .Values.server.resume.windowSeconds) 0 }}true{{ end }}
{{- end }}

{{/*
What maxSessions auto budgets per session, in KiB: sessionMemoryKiB, and
with resume on the frames it keeps for a replay (server.resume.maxBytes)
twice, once live and once parked (at most as many parked sessions as
MAX_SESSIONS), plus 1 KiB of parked state.
*/}}
{{- define "gsd.sessionBudgetKiB" -}}
{{- $s := .Values.server }}
{{- if include "gsd.resumeOn" . }}
{{- add (int64 $s.sessionMemoryKiB) (mul 2 (div (add (int64 $s.resume.maxBytes) 1023) 1024)) 1 }}
{{- else }}
{{- int64 $s.sessionMemoryKiB }}
{{- end }}
{{- end }}

{{/*
The Secret holding the resume key: server.resume.existingSecret, or the one
the chart makes.
*/}}
{{- define "gsd.resumeSecret" -}}
{{- .Values.server.resume.existingSecret | default (printf "%s-resume-key" (include "gsd.fullname" .)) }}
{{- end }}

{{/*
MAX_SESSIONS: server.maxSessions, or with "auto" as many sessions as fit in
the memory limit at their worst case, so that the pod's own clients cannot
get it OOM-killed.
*/}}
{{- define "gsd.maxSessions" -}}
{{- $s := .Values.server }}
{{- if eq (toString $s.maxSessions) "auto" }}
{{- $limit := dig "limits" "memory" "" $s.resources }}
{{- if not $limit }}
{{- fail "server.maxSessions auto needs server.resources.limits.memory (or set server.maxSessions to a number)" }}
{{- end }}
{{- $mib := include "gsd.memoryMiB" $limit | int64 }}
{{- $per := int64 (include "gsd.sessionBudgetKiB" .) }}
{{- $n := div (mul (sub $mib (int64 $s.memoryReserveMiB)) 1024) $per }}
{{- if lt $n 1 }}
{{- fail (printf "server.resources.limits.memory %s leaves no room for a session after memoryReserveMiB %d at %d KiB a session (sessionMemoryKiB %d, and the resume budget)" $limit (int $s.memoryReserveMiB) $per (int $s.sessionMemoryKiB)) }}
{{- end }}
{{- $n }}
{{- else }}
{{- int $s.maxSessions }}
{{- end }}
{{- end }}

{{/*
The test pods' hook-delete-policy. A succeeded test pod should go, so that
`helm uninstall` leaves nothing of the release (Helm never deletes hook
resources itself). Helm 4.1 and later delete it only after `helm test
--logs` has read its log (helm/helm#31579; 4.0.x lacks it); earlier Helm
deletes it first, and `--logs` then fails with "pods ... not found"
(helm/helm#9098). So before Helm 4.1 a test pod stays until the next
`helm test` replaces it (NOTES.txt gives the command that removes it);
a failed one stays on both, for its log.
*/}}
{{- define "gsd.testDeletePolicy" -}}
{{- if semverCompare ">=4.1.0-0" .Capabilities.HelmVersion.Version -}}
before-hook-creation,hook-succeeded
{{- else -}}
before-hook-creation
{{- end -}}
{{- end }}

{{/* "true" when the verdict has its proxy phase (verdict.via.name), else "". */}}
{{- define "gsd.via" -}}
{{- if and .Values.verdict.enabled .Values.verdict.via.name }}true{{ end }}
{{- end }}

{{/*
verdict.via whole or not at all: the proxy phase needs its name, namespace
and Deployment together, the verdict itself, clients that go through the
proxy, and for a proxy gsd does not know its setting (the verdict's
--via rules, checked here so that a half-given value fails the install,
not the test).
*/}}
{{- define "gsd.validateVia" -}}
{{- $v := .Values.verdict.via }}
{{- $given := list }}
{{- $missing := list }}
{{- range $key := list "name" "namespace" "deployment" "setting" "settingName" }}
{{- if index $v $key }}{{ $given = append $given (printf "%s=%s" $key (index $v $key)) }}{{ else if has $key (list "name" "namespace" "deployment") }}{{ $missing = append $missing $key }}{{ end }}
{{- end }}
{{- if $given }}
{{- if not .Values.verdict.enabled }}
{{- fail (printf "verdict.via (%s) needs verdict.enabled: the proxy phase is part of the in-cluster verdict" (join ", " $given)) }}
{{- end }}
{{- if $missing }}
{{- fail (printf "verdict.via is half-given (%s): set verdict.via.%s too; name, namespace and deployment go together" (join ", " $given) (join ", verdict.via." $missing)) }}
{{- end }}
{{- if not .Values.client.serverUrl }}
{{- fail (printf "verdict.via.name %s needs client.serverUrl: the clients must go through the proxy (e.g. ws://<its Service>.<namespace>.svc/ws) for its rollout to show anything" $v.name) }}
{{- end }}
{{- if and (not (has $v.name (list "traefik" "envoy-gateway"))) (or (not $v.setting) (not $v.settingName)) }}
{{- fail (printf "verdict.via.name %s: not a proxy gsd knows the drain setting of (traefik, envoy-gateway): set verdict.via.setting and verdict.via.settingName" $v.name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether client.extraEnv sets RUST_LOG: "true" or "". */}}
{{- define "gsd.clientSetsRustLog" -}}
{{- range .Values.client.extraEnv }}{{ if eq .name "RUST_LOG" }}true{{ end }}{{ end }}
{{- end }}

{{/*
The name of the proxy phase's Role and RoleBinding in the proxy's namespace:
<fullname>-verdict-<release namespace>, so that releases of the same name
in two namespaces can both test one proxy.
*/}}
{{- define "gsd.verdictViaName" -}}
{{- printf "%s-verdict-%s" (include "gsd.fullname" .) .Release.Namespace }}
{{- end }}
