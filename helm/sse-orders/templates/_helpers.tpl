{{/*
Names. The release name is used alone when it already contains the chart name, so
"helm install sse-orders" gives sse-orders-order-api, sse-orders-stream-gateway, sse-orders-redis.
nameOverride replaces the chart name in both, fullnameOverride the whole prefix.
*/}}
{{- define "sse-orders.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sse-orders.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := .Values.nameOverride | default .Chart.Name -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
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

{{- define "sse-orders.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "sse-orders.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given (the tag is then ignored). */}}
{{- define "sse-orders.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
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

{{/* The Secret that holds REDIS_URL: the bundled Redis's, the chart's for redis.url, or yours. */}}
{{- define "sse-orders.redis.secretName" -}}
{{- if .Values.redis.enabled -}}
{{- include "sse-orders.redis.fullname" . -}}
{{- else -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis-url" (include "sse-orders.fullname" .)) -}}
{{- end -}}
{{- end -}}

{{- define "sse-orders.redis.secretKey" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecretKey -}}
{{- else -}}
redis-url
{{- end -}}
{{- end -}}

{{/* The Secret the chart makes for jwtSecret / jwtPublicKey given as values. */}}
{{- define "sse-orders.jwt.secretName" -}}
{{- printf "%s-jwt" (include "sse-orders.fullname" .) -}}
{{- end -}}

{{/* true when the JWT public key is mounted as a file (jwtPublicKey, or jwtExistingSecret under key jwt-public-key). */}}
{{- define "sse-orders.jwt.publicKeyFile" -}}
{{- if and (eq .Values.auth "jwt") (or .Values.jwtPublicKey (and .Values.jwtExistingSecret (eq .Values.jwtExistingSecretKey "jwt-public-key"))) -}}
true
{{- end -}}
{{- end -}}

{{/* Environment shared by both services. */}}
{{- define "sse-orders.sharedEnv" -}}
- name: LISTEN
  value: "0.0.0.0:8080"
- name: LISTEN_BACKLOG
  value: {{ .Values.listenBacklog | int64 | quote }}
# From a Secret: the URL may carry a password (the bundled Redis always has one).
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "sse-orders.redis.secretName" . }}
      key: {{ include "sse-orders.redis.secretKey" . }}
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
- name: AUTH
  value: {{ .Values.auth | quote }}
{{- if eq .Values.auth "jwt" }}
{{- if .Values.jwtSecret }}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "sse-orders.jwt.secretName" . }}
      key: jwt-secret
{{- else if and .Values.jwtExistingSecret (ne .Values.jwtExistingSecretKey "jwt-public-key") }}
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.jwtExistingSecret }}
      key: {{ .Values.jwtExistingSecretKey }}
{{- end }}
{{- if include "sse-orders.jwt.publicKeyFile" . }}
- name: JWT_PUBLIC_KEY_FILE
  value: /etc/sse-orders/jwt/jwt-public-key
{{- end }}
{{- if .Values.jwtJwksUrl }}
- name: JWT_JWKS_URL
  value: {{ .Values.jwtJwksUrl | quote }}
- name: JWT_JWKS_REFRESH
  value: {{ .Values.jwtJwksRefresh | quote }}
{{- end }}
{{- with .Values.jwtIssuer }}
- name: JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.jwtAudience }}
- name: JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
- name: JWT_LEEWAY
  value: {{ .Values.jwtLeeway | quote }}
{{- end }}
{{- with .Values.corsOrigins }}
- name: CORS_ORIGINS
  value: {{ join "," . | quote }}
{{- end }}
- name: HEADER_READ_TIMEOUT
  value: {{ .Values.headerReadTimeout | quote }}
- name: IDLE_TIMEOUT
  value: {{ .Values.idleTimeout | quote }}
{{- end -}}

{{/* Volumes and mounts of both services: the JWT public key file, when there is one. */}}
{{- define "sse-orders.volumes" -}}
{{- if include "sse-orders.jwt.publicKeyFile" . }}
volumes:
  - name: jwt
    secret:
      secretName: {{ if .Values.jwtPublicKey }}{{ include "sse-orders.jwt.secretName" . }}{{ else }}{{ .Values.jwtExistingSecret }}{{ end }}
      items:
        - key: jwt-public-key
          path: jwt-public-key
{{- end }}
{{- end -}}

{{- define "sse-orders.volumeMounts" -}}
{{- if include "sse-orders.jwt.publicKeyFile" . }}
volumeMounts:
  - name: jwt
    mountPath: /etc/sse-orders/jwt
    readOnly: true
{{- end }}
{{- end -}}

{{/*
Pod metadata of a service: labels (selector, common, podLabels) and annotations (podAnnotations,
and checksums of the Secrets the pods read, so a changed key or Redis URL rolls them).
Call with (dict "context" $ "component" "order-api").
*/}}
{{- define "sse-orders.podMetadata" -}}
{{- $ := .context -}}
labels:
  {{- include "sse-orders.labels" . | nindent 2 }}
  {{- with $.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/secrets: {{ printf "%s\n%s\n%s" (include (print $.Template.BasePath "/redis/secret.yaml") $) (include (print $.Template.BasePath "/jwt-secret.yaml") $) (include (print $.Template.BasePath "/redis/url-secret.yaml") $) | sha256sum }}
  {{- with $.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{- define "sse-orders.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "sse-orders.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
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

{{/*
Scheduling of a service's pods: spread over nodes and zones (soft by default, so a one-node
development cluster still schedules everything), then nodeSelector, tolerations, affinity.
Call with (dict "context" $ "component" "order-api").
*/}}
{{- define "sse-orders.scheduling" -}}
{{- $ := .context -}}
{{- $component := .component -}}
{{- $spread := $.Values.topologySpread -}}
{{- if $spread.enabled }}
topologySpreadConstraints:
  {{- range $spread.topologyKeys }}
  - maxSkew: {{ $spread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "sse-orders.selectorLabels" (dict "context" $ "component" $component) | nindent 8 }}
  {{- end }}
{{- end }}
{{- with $.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.imagePullSecrets }}
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
{{- if eq .Values.auth "jwt" -}}
{{- if not (or .Values.jwtSecret .Values.jwtExistingSecret .Values.jwtPublicKey .Values.jwtJwksUrl) -}}
{{- $messages = append $messages "auth: jwt (the default) needs a key to verify tokens: set jwtSecret (HS256), jwtExistingSecret (a Secret with key jwt-secret, or jwt-public-key with jwtExistingSecretKey=jwt-public-key), jwtPublicKey (RS256/ES256 PEM) or jwtJwksUrl; or auth=none, for development only" -}}
{{- end -}}
{{- if and .Values.jwtSecret .Values.jwtExistingSecret -}}
{{- $messages = append $messages "jwtSecret: set jwtSecret or jwtExistingSecret, not both" -}}
{{- end -}}
{{- if and .Values.jwtPublicKey .Values.jwtExistingSecret (eq .Values.jwtExistingSecretKey "jwt-public-key") -}}
{{- $messages = append $messages "jwtPublicKey: set jwtPublicKey or jwtExistingSecret with key jwt-public-key, not both" -}}
{{- end -}}
{{- if and .Values.jwtPublicKey (not (contains "-----BEGIN" .Values.jwtPublicKey)) -}}
{{- $messages = append $messages "jwtPublicKey: must be a PEM public key (-----BEGIN PUBLIC KEY-----...)" -}}
{{- end -}}
{{- if and .Values.jwtJwksUrl (not (regexMatch "^https?://" .Values.jwtJwksUrl)) -}}
{{- $messages = append $messages "jwtJwksUrl: must be an http:// or https:// URL" -}}
{{- end -}}
{{- $_ := include "sse-orders.durationSeconds" (dict "value" .Values.jwtLeeway "name" "jwtLeeway") -}}
{{- $_ := include "sse-orders.durationSeconds" (dict "value" .Values.jwtJwksRefresh "name" "jwtJwksRefresh") -}}
{{- end -}}
{{- range .Values.corsOrigins -}}
{{- if not (regexMatch "^https?://[^/?#*,\\s]+$" .) -}}
{{- $messages = append $messages (printf "corsOrigins: %q is not an exact origin such as https://shop.example.com or http://localhost:3000 (scheme://host[:port], no path, no wildcard)" .) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "headerReadTimeout" "idleTimeout" -}}
{{- if eq (include "sse-orders.durationSeconds" (dict "value" (get $.Values $key) "name" $key)) "0" -}}
{{- $messages = append $messages (printf "%s: must be longer than 0, or slow clients hold connections open forever" $key) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.streamGateway.autoscaling.enabled .Values.streamGateway.autoscaling.connections.enabled -}}
{{- if ge (int .Values.streamGateway.autoscaling.connections.averagePerPod) (int .Values.streamGateway.maxConnections) -}}
{{- $messages = append $messages "streamGateway.autoscaling.connections.averagePerPod: must be below streamGateway.maxConnections, or pods refuse streams before the autoscaler adds one" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- $messages = append $messages "ingress.host: required when ingress.enabled=true" -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
