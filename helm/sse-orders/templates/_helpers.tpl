{{/*
Names. The release name is used alone when it already contains the chart name, so
"helm install sse-orders" gives sse-orders-order-api, sse-orders-stream-gateway, sse-orders-redis.
*/}}
{{- define "sse-orders.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sse-orders.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sse-orders.orderApi.fullname" -}}
{{- printf "%s-order-api" (include "sse-orders.fullname" .) -}}
{{- end -}}

{{- define "sse-orders.streamGateway.fullname" -}}
{{- printf "%s-stream-gateway" (include "sse-orders.fullname" .) -}}
{{- end -}}

{{- define "sse-orders.redis.fullname" -}}
{{- printf "%s-redis" (include "sse-orders.fullname" .) -}}
{{- end -}}

{{- define "sse-orders.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Labels: call with (dict "context" $ "component" "order-api"). */}}
{{- define "sse-orders.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: sse-orders
{{- if .context.Chart.AppVersion }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
{{- end }}
{{ include "sse-orders.selectorLabels" . }}
{{- end -}}

{{- define "sse-orders.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sse-orders.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Seconds in a duration such as 300ms, 10s, 5m, 1h30m or 0, rounded up; fails on anything else.
Call with (dict "value" "20s" "name" "streamGateway.shutdownGrace").
*/}}
{{- define "sse-orders.durationSeconds" -}}
{{- $text := toString .value | nospace -}}
{{- $millis := 0 -}}
{{- if ne $text "0" -}}
{{- $parts := regexFindAll "[0-9]+(ms|s|m|h)" $text -1 -}}
{{- if or (not $parts) (ne (join "" $parts) $text) -}}
{{- fail (printf "%s: %q is not a duration such as 300ms, 10s, 5m or 1h30m" .name (toString .value)) -}}
{{- end -}}
{{- $unitMillis := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 -}}
{{- range $parts -}}
{{- $number := regexFind "^[0-9]+" . -}}
{{- $unit := trimPrefix $number . -}}
{{- $millis = add $millis (mul (atoi $number) (get $unitMillis $unit)) -}}
{{- end -}}
{{- end -}}
{{- div (add $millis 999) 1000 -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds of a component: the value given, or the drain delay plus the
shutdown grace plus 10 seconds for the process to exit. Call with (dict "values" .Values.x "name" "x").
*/}}
{{- define "sse-orders.terminationGracePeriodSeconds" -}}
{{- $drain := include "sse-orders.durationSeconds" (dict "value" .values.drainDelay "name" (printf "%s.drainDelay" .name)) | atoi -}}
{{- $grace := include "sse-orders.durationSeconds" (dict "value" .values.shutdownGrace "name" (printf "%s.shutdownGrace" .name)) | atoi -}}
{{- if kindIs "invalid" .values.terminationGracePeriodSeconds -}}
{{- add $drain $grace 10 -}}
{{- else -}}
{{- int .values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* The Secret that holds REDIS_URL for an external Redis. */}}
{{- define "sse-orders.redis.secretName" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis-url" (include "sse-orders.fullname" .)) -}}
{{- end -}}

{{/* Environment shared by both services. */}}
{{- define "sse-orders.sharedEnv" -}}
- name: LISTEN
  value: "0.0.0.0:8080"
- name: LISTEN_BACKLOG
  value: {{ .Values.listenBacklog | int64 | quote }}
- name: REDIS_URL
{{- if .Values.redis.enabled }}
  value: {{ printf "redis://%s:6379" (include "sse-orders.redis.fullname" .) | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ include "sse-orders.redis.secretName" . }}
      key: {{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- end }}
- name: STREAM_KEY
  value: {{ .Values.streamKey | quote }}
- name: REDIS_TIMEOUT
  value: {{ .Values.redisTimeout | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logFilter | quote }}
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{- define "sse-orders.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sse-orders.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Probes of both services: /readyz turns 503 while Redis is unreachable or the pod drains. */}}
{{- define "sse-orders.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{- define "sse-orders.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Checks that fail early with a message naming the value to change, before anything is applied.
*/}}
{{- define "sse-orders.validateValues" -}}
{{- $messages := list -}}
{{- $redis := .Values.redis -}}
{{- $external := or $redis.url $redis.existingSecret -}}
{{- if and $redis.enabled $external -}}
{{- $messages = append $messages "redis: set either redis.enabled=true (the bundled development Redis) or redis.url / redis.existingSecret (an external Redis), not both" -}}
{{- else if not (or $redis.enabled $external) -}}
{{- $messages = append $messages "redis: order-api and stream-gateway share their events through Redis; set redis.enabled=true or redis.url / redis.existingSecret" -}}
{{- end -}}
{{- if and $redis.url $redis.existingSecret -}}
{{- $messages = append $messages "redis: set redis.url or redis.existingSecret, not both" -}}
{{- end -}}
{{- if and $redis.url (not (regexMatch "^rediss?(-sentinel|-cluster)?://" $redis.url)) -}}
{{- $messages = append $messages "redis.url: must start with redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://" -}}
{{- end -}}
{{- if and (regexMatch "^rediss?-sentinel://" $redis.url) (not (contains "sentinelServiceName=" $redis.url)) -}}
{{- $messages = append $messages "redis.url: a redis-sentinel:// URL needs ?sentinelServiceName=<master name>" -}}
{{- end -}}
{{- if and (regexMatch "^rediss?-cluster://" $redis.url) (not (regexMatch "\\{[^}]+\\}" .Values.streamKey)) -}}
{{- $messages = append $messages "streamKey: with Redis Cluster the key needs a {hash tag} (e.g. {orders}:events) so the order, its event and its idempotency key share a slot" -}}
{{- end -}}
{{- if not (has .Values.logFormat (list "json" "text")) -}}
{{- $messages = append $messages (printf "logFormat: %q is not json or text" .Values.logFormat) -}}
{{- end -}}
{{- if not (has .Values.streamGateway.delivery (list "hub" "poll")) -}}
{{- $messages = append $messages (printf "streamGateway.delivery: %q is not hub or poll" .Values.streamGateway.delivery) -}}
{{- end -}}
{{- $heartbeat := include "sse-orders.durationSeconds" (dict "value" .Values.streamGateway.heartbeatInterval "name" "streamGateway.heartbeatInterval") | atoi -}}
{{- if ge $heartbeat 60 -}}
{{- $messages = append $messages "streamGateway.heartbeatInterval: must stay below 60s, the idle timeout of most proxies and load balancers" -}}
{{- end -}}
{{- range $key := list "replayWindow" "reconnectDelay" "pollInterval" -}}
{{- $_ := include "sse-orders.durationSeconds" (dict "value" (get $.Values.streamGateway $key) "name" (printf "streamGateway.%s" $key)) -}}
{{- end -}}
{{- range $key := list "streamMaxAge" "idempotencyTtl" -}}
{{- $_ := include "sse-orders.durationSeconds" (dict "value" (get $.Values.orderApi $key) "name" (printf "orderApi.%s" $key)) -}}
{{- end -}}
{{- $_ := include "sse-orders.durationSeconds" (dict "value" .Values.redisTimeout "name" "redisTimeout") -}}
{{- range $name := list "orderApi" "streamGateway" -}}
{{- $component := get $.Values $name -}}
{{- $drain := include "sse-orders.durationSeconds" (dict "value" $component.drainDelay "name" (printf "%s.drainDelay" $name)) | atoi -}}
{{- $grace := include "sse-orders.durationSeconds" (dict "value" $component.shutdownGrace "name" (printf "%s.shutdownGrace" $name)) | atoi -}}
{{- $period := include "sse-orders.terminationGracePeriodSeconds" (dict "values" $component "name" $name) | atoi -}}
{{- if le $period (add $drain $grace) -}}
{{- $messages = append $messages (printf "%s.terminationGracePeriodSeconds: %d must be larger than drainDelay + shutdownGrace (%ds), or the pod is killed before it has drained" $name $period (add $drain $grace)) -}}
{{- end -}}
{{- if and $component.autoscaling.enabled (gt (int $component.autoscaling.minReplicas) (int $component.autoscaling.maxReplicas)) -}}
{{- $messages = append $messages (printf "%s.autoscaling: minReplicas is larger than maxReplicas" $name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- $messages = append $messages "ingress.host: required when ingress.enabled=true" -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
