{{/*
Names and labels.
*/}}
{{- define "nvr-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nvr-bridge.fullname" -}}
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

{{- define "nvr-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nvr-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nvr-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nvr-bridge.labels" -}}
helm.sh/chart: {{ include "nvr-bridge.chart" . }}
{{ include "nvr-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: bridge
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "nvr-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nvr-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nvr-bridge.secretName" -}}
{{- default (include "nvr-bridge.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
The salt of the checksum/secret annotation: secretChecksumSalt when set; else the one
kept in the chart's own Secret (key checksum-salt), read back with lookup so that it
stays the same across upgrades; else (first install, or no cluster to ask: helm
template, helm lint) a new random one. The Secret stores whichever is used. Generated
once per render: the Secret and the pod template must agree on it.
*/}}
{{- define "nvr-bridge.checksumSalt" -}}
{{- if .Values.secretChecksumSalt }}
{{- .Values.secretChecksumSalt }}
{{- else }}
{{- $cache := .Values.__nvrBridgeRender | default dict }}
{{- if not $cache.salt }}
{{- $salt := "" }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "nvr-bridge.fullname" .) }}
{{- if and $existing $existing.data (index $existing.data "checksum-salt") }}
{{- $salt = index $existing.data "checksum-salt" | b64dec }}
{{- else }}
{{- $salt = randAlphaNum 32 }}
{{- end }}
{{- $_ := set $cache "salt" $salt }}
{{- $_ := set .Values "__nvrBridgeRender" $cache }}
{{- end }}
{{- $cache.salt }}
{{- end }}
{{- end }}

{{/*
checksum/secret: restarts the pods when a password of the values changes, without
telling anything about the passwords to whoever can read the Deployment: the SHA-256 of
a secret salt (see nvr-bridge.checksumSalt) and the passwords, never of the passwords
alone, which could be guessed offline. Empty (no annotation) when the chart's Secret
holds no password, or with existingSecret (the chart never sees those passwords).
*/}}
{{- define "nvr-bridge.secretChecksum" -}}
{{- $passwords := include "nvr-bridge.passwords" . | fromJson }}
{{- if and $passwords (not .Values.existingSecret) }}
{{- printf "%s\n%s" (include "nvr-bridge.checksumSalt" .) (toJson $passwords) | sha256sum }}
{{- end }}
{{- end }}

{{- define "nvr-bridge.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Where the Secret's files appear in the container, and where the config file is.
*/}}
{{- define "nvr-bridge.secretDir" -}}/run/secrets/nvr-bridge{{- end }}
{{- define "nvr-bridge.configDir" -}}/etc/nvr-bridge{{- end }}

{{/*
A copy of a settings map without its empty strings and nulls (false and 0 stay), so the
bridge's own defaults apply to whatever the values leave blank.
*/}}
{{- define "nvr-bridge.compact" -}}
{{- $out := dict }}
{{- range $key, $value := . }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The passwords the chart's Secret holds, as a JSON map of Secret key -> password, after
checking the NVR list. Fails with a readable message on a missing id, a bad id, a
duplicate id, or an account without a password.
*/}}
{{- define "nvr-bridge.passwords" -}}
{{- $out := dict }}
{{- $seen := dict }}
{{- $external := ne .Values.existingSecret "" }}
{{- if and .Values.mqtt.username (not .Values.mqtt.password_file) }}
{{- if .Values.mqtt.password }}
{{- $_ := set $out "mqtt-password" .Values.mqtt.password }}
{{- else if not $external }}
{{- fail "mqtt.username is set but mqtt.password is empty: set mqtt.password, or existingSecret naming a Secret with the key mqtt-password" }}
{{- end }}
{{- end }}
{{- if not .Values.nvrs }}
{{- fail "nvrs is empty: list at least one NVR (id, url)" }}
{{- end }}
{{- range $index, $nvr := .Values.nvrs }}
{{- if not $nvr.id }}
{{- fail (printf "nvrs[%d] has no id: give every NVR an id ([A-Za-z0-9_-]+, its name in MQTT topics)" $index) }}
{{- end }}
{{- $id := toString $nvr.id }}
{{- if not (regexMatch "^[A-Za-z0-9_-]+$" $id) }}
{{- fail (printf "nvrs[%d].id %q must match [A-Za-z0-9_-]+ (it becomes an MQTT topic level)" $index $id) }}
{{- end }}
{{- if hasKey $seen $id }}
{{- fail (printf "nvrs[%d].id %q is used twice: NVR ids must be unique" $index $id) }}
{{- end }}
{{- $_ := set $seen $id true }}
{{- if not $nvr.url }}
{{- fail (printf "nvrs[%d] (%s) has no url: set http://host:port of the NVR" $index $id) }}
{{- end }}
{{- if and $nvr.username (not $nvr.password_file) }}
{{- if $nvr.password }}
{{- $_ := set $out (printf "nvr-%s-password" $id) (toString $nvr.password) }}
{{- else if not $external }}
{{- fail (printf "nvrs[%d] (%s) has a username but no password: set nvrs[%d].password, or existingSecret naming a Secret with the key nvr-%s-password" $index $id $index $id) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The bridge's config file (docs/configuration.md) as YAML: no password in it, only
password_file paths into the mounted Secret.
*/}}
{{- define "nvr-bridge.config" -}}
{{- $passwords := include "nvr-bridge.passwords" . | fromJson }}
{{- $secretDir := include "nvr-bridge.secretDir" . }}
{{- $config := include "nvr-bridge.compact" .Values.bridge | fromJson }}
{{- $_ := set $config "http_port" (int .Values.http.port) }}
{{- $mqtt := include "nvr-bridge.compact" (omit .Values.mqtt "password" "client_id") | fromJson }}
{{- if hasKey $mqtt "protocol" }}
{{- /* "5" and "3.1.1" are strings to the bridge, though YAML reads an unquoted 5 as a number */}}
{{- $_ := set $mqtt "protocol" (toString $mqtt.protocol) }}
{{- end }}
{{- if and .Values.mqtt.username (not .Values.mqtt.password_file) }}
{{- $_ := set $mqtt "password_file" (printf "%s/mqtt-password" $secretDir) }}
{{- end }}
{{- $_ := set $config "mqtt" $mqtt }}
{{- if .Values.spool.enabled }}
{{- $_ := set $config "spool_dir" .Values.spool.mountPath }}
{{- end }}
{{- $nvrs := list }}
{{- range .Values.nvrs }}
{{- $nvr := include "nvr-bridge.compact" (omit . "password") | fromJson }}
{{- if and .username (not .password_file) }}
{{- $_ := set $nvr "password_file" (printf "%s/nvr-%s-password" $secretDir (toString .id)) }}
{{- end }}
{{- $nvrs = append $nvrs $nvr }}
{{- end }}
{{- $_ := set $config "nvrs" $nvrs }}
{{- $config = mergeOverwrite $config (deepCopy .Values.extraConfig) }}
{{- toYaml $config }}
{{- end }}

{{/*
The checks that do not belong to one NVR.
*/}}
{{- define "nvr-bridge.validate" -}}
{{- if not (has .Values.mode (list "deployment" "statefulset")) }}
{{- fail (printf "mode %q is not known: use deployment or statefulset" .Values.mode) }}
{{- end }}
{{- if and (eq .Values.mode "deployment") (ne (int .Values.replicas) 1) }}
{{- fail "replicas must be 1 in deployment mode (two bridges for the same NVRs publish every event twice): use mode=statefulset to shard the NVRs across pods" }}
{{- end }}
{{- if lt (int .Values.replicas) 1 }}
{{- fail "replicas must be at least 1" }}
{{- end }}
{{- if not (has .Values.sharding.indexSource (list "podIndexLabel" "hostname")) }}
{{- fail (printf "sharding.indexSource %q is not known: use hostname or podIndexLabel" .Values.sharding.indexSource) }}
{{- end }}
{{- if and (eq .Values.mode "statefulset") (eq .Values.sharding.indexSource "podIndexLabel") (semverCompare "<1.28.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "sharding.indexSource podIndexLabel needs Kubernetes 1.28 or later (the apps.kubernetes.io/pod-index label), and this cluster is %s: use sharding.indexSource=hostname" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if not (has .Values.spool.type (list "emptyDir" "pvc")) }}
{{- fail (printf "spool.type %q is not known: use emptyDir or pvc" .Values.spool.type) }}
{{- end }}
{{- end }}

{{/*
The pod template shared by the Deployment and the StatefulSet.
*/}}
{{- define "nvr-bridge.podTemplate" -}}
{{- $statefulset := eq .Values.mode "statefulset" -}}
metadata:
  labels:
    {{- include "nvr-bridge.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "nvr-bridge.config" . | sha256sum }}
    {{- with include "nvr-bridge.secretChecksum" . }}
    checksum/secret: {{ . }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "nvr-bridge.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: nvr-bridge
      image: {{ include "nvr-bridge.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- if and $statefulset (eq .Values.sharding.indexSource "hostname") }}
      # The ordinal is the suffix of the pod's hostname (nvr-bridge-2 -> 2).
      command: ["/bin/sh", "-c"]
      args:
        - 'export BRIDGE_SHARD_INDEX="${HOSTNAME##*-}"; exec nvr-bridge run'
      {{- else }}
      args: ["run"]
      {{- end }}
      env:
        - name: BRIDGE_CONFIG_FILE
          value: {{ include "nvr-bridge.configDir" . }}/config.yaml
        - name: BRIDGE_HTTP_PORT
          value: {{ .Values.http.port | quote }}
        {{- if $statefulset }}
        # One MQTT client id per pod: stable across restarts, so each shard keeps its
        # broker session (subscriptions and queued requests).
        - name: BRIDGE_MQTT_CLIENT_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- if eq .Values.sharding.indexSource "podIndexLabel" }}
        - name: BRIDGE_SHARD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
        - name: BRIDGE_SHARD_COUNT
          value: {{ .Values.replicas | quote }}
        {{- else }}
        # A fixed client id: the one bridge (strategy Recreate) finds its broker session
        # again after a restart.
        - name: BRIDGE_MQTT_CLIENT_ID
          value: {{ default (include "nvr-bridge.fullname" .) .Values.mqtt.client_id | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http-metrics
          containerPort: {{ .Values.http.port }}
          protocol: TCP
      livenessProbe:
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ include "nvr-bridge.configDir" . }}
          readOnly: true
        - name: secrets
          mountPath: {{ include "nvr-bridge.secretDir" . }}
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if .Values.spool.enabled }}
        - name: spool
          mountPath: {{ .Values.spool.mountPath }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "nvr-bridge.fullname" . }}
        items:
          - key: config.yaml
            path: config.yaml
    - name: secrets
      secret:
        secretName: {{ include "nvr-bridge.secretName" . }}
        # Group-readable: the files belong to root, group fsGroup (10001).
        defaultMode: 0440
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: 16Mi
    {{- if .Values.spool.enabled }}
    {{- if eq .Values.spool.type "emptyDir" }}
    - name: spool
      emptyDir:
        sizeLimit: {{ .Values.spool.size }}
    {{- else if not $statefulset }}
    - name: spool
      persistentVolumeClaim:
        claimName: {{ include "nvr-bridge.fullname" . }}-spool
    {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The spool's PersistentVolumeClaim spec (a PVC in deployment mode, a
volumeClaimTemplate in statefulset mode).
*/}}
{{- define "nvr-bridge.spoolClaimSpec" -}}
accessModes:
  {{- toYaml .Values.spool.accessModes | nindent 2 }}
{{- with .Values.spool.storageClassName }}
storageClassName: {{ . | quote }}
{{- end }}
resources:
  requests:
    storage: {{ .Values.spool.size }}
{{- end }}
