{{/* Names and labels. */}}
{{- define "lextral.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lextral.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "embedder"). */}}
{{- define "lextral.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lextral.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The Secret holding database-url and llm-api-key. */}}
{{- define "lextral.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "lextral.fullname" .)) -}}
{{- end -}}

{{/* gRPC URL of a component's Service: (dict "root" $ "component" "embedder" "port" 50052). */}}
{{- define "lextral.url" -}}
http://{{ include "lextral.fullname" .root }}-{{ .component }}:{{ .port }}
{{- end -}}

{{/* Objects the release reads but does not create (the user's Secret and
claims), named on every workload so reviewers and helm/check.sh see them. */}}
{{- define "lextral.externalRefs" -}}
{{- compact (list .Values.secrets.existingSecret .Values.auth.existingKeysSecret .Values.finetunedClassifier.model.existingClaim .Values.indexJob.data.existingClaim (ternary .Values.tls.secretName "" .Values.tls.enabled)) | join "," -}}
{{- end -}}

{{/* The bundled database's URL: (dict "root" $ "password" P). */}}
{{- define "lextral.databaseUrl" -}}
{{- $pg := .root.Values.postgresql -}}
postgres://{{ $pg.user }}:{{ .password }}@{{ include "lextral.fullname" .root }}-postgresql:5432/{{ $pg.database }}
{{- end -}}

{{/* The bundled database's password: the value given, else the one this
release generated before (kept in its Secret), else a new one. */}}
{{- define "lextral.postgresPassword" -}}
{{- if .Values.postgresql.password -}}
{{- .Values.postgresql.password -}}
{{- else -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (printf "%s-secrets" (include "lextral.fullname" .)) -}}
{{- if and $secret $secret.data (index $secret.data "postgres-password") -}}
{{- index $secret.data "postgres-password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the generated service key (and, without
auth.existingKeysSecret, the generated admin key and keys.json). */}}
{{- define "lextral.authSecretName" -}}
{{- printf "%s-auth" (include "lextral.fullname" .) -}}
{{- end -}}

{{/* The Secret holding keys.json for the orchestrator. */}}
{{- define "lextral.keysSecretName" -}}
{{- .Values.auth.existingKeysSecret | default (include "lextral.authSecretName" .) -}}
{{- end -}}

{{/*
One service's Deployment and Service. Arguments (a dict):
  root       the chart context
  component  name suffix and the `lextral serve` target
  values     the component's values (replicas, port, env, resources)
  ports      list of dicts {name, port}; the first is gRPC
  health     gRPC health service name checked by the probes
  models     whether the pod needs /models (init container)
  env        extra env entries (list)
  volumes    extra volumes (list), mounts: extra volumeMounts (list)
*/}}
{{- define "lextral.service" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $name := printf "%s-%s" (include "lextral.fullname" $root) .component -}}
{{- $grpc := index .ports 0 -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "lextral.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  {{- with include "lextral.externalRefs" $root }}
  annotations:
    lextral.dev/external-refs: {{ . | quote }}
  {{- end }}
spec:
  {{- if not (and $v.autoscaling $v.autoscaling.enabled) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "lextral.selectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "lextral.selectorLabels" (dict "root" $root "component" .component) | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if $root.Values.metrics.annotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $root.Values.metrics.port | quote }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- if .models }}
      initContainers:
        - name: models
          image: "{{ $root.Values.modelsImage.repository }}:{{ $root.Values.modelsImage.tag | default $root.Chart.AppVersion }}"
          imagePullPolicy: {{ $root.Values.modelsImage.pullPolicy }}
          command: ["sh", "-c", "cp -a /opt/lextral/models/. /dest/"]
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            requests: { cpu: 100m, memory: 64Mi }
            limits: { cpu: "1", memory: 256Mi }
          volumeMounts:
            - name: models
              mountPath: /dest
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "lextral.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["serve", {{ .serve | default .component | quote }}]
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "lextral.fullname" $root }}-config
          env:
            - name: LEXTRAL_GRPC
              value: "0.0.0.0:{{ $grpc.port }}"
            # Sent to the services this one calls and required from its
            # callers; a file, so it never shows in the pod's environment.
            - name: LEXTRAL_SERVICE_KEY_FILE
              value: /var/run/lextral/auth/service-key
            {{- if and .public $root.Values.tls.enabled }}
            - name: LEXTRAL_TLS_CERT
              value: /var/run/lextral/tls/tls.crt
            - name: LEXTRAL_TLS_KEY
              value: /var/run/lextral/tls/tls.key
            {{- end }}
            {{- if .public }}
            {{- if $root.Values.auth.insecureNoAuth }}
            - name: LEXTRAL_INSECURE_NO_AUTH
              value: "true"
            {{- else }}
            - name: LEXTRAL_KEYS_FILE
              value: /var/run/lextral/keys/keys.json
            {{- end }}
            {{- end }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- range $key, $value := $v.env }}
            - name: {{ $key }}
              value: {{ $value | quote }}
            {{- end }}
          # Start-up and liveness ask the server as a whole (SERVING while
          # the process answers); readiness asks for the service itself,
          # which is NOT_SERVING until its model or database is ready, so a
          # pod without its model stays out of the Service instead of
          # restarting in a loop.
          {{- if and .public $root.Values.tls.enabled }}
          {{- $https := 0 }}
          {{- range .ports }}{{ if eq .name "http" }}{{ $https = .port }}{{ end }}{{ end }}
          # Over TLS: the gateway's health pages by HTTPS (kubelet does not
          # verify the certificate).
          startupProbe:
            httpGet:
              path: /healthz
              port: {{ $https }}
              scheme: HTTPS
            periodSeconds: 5
            failureThreshold: 60
          readinessProbe:
            httpGet:
              path: /readyz
              port: {{ $https }}
              scheme: HTTPS
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: /healthz
              port: {{ $https }}
              scheme: HTTPS
            periodSeconds: 20
            failureThreshold: 3
          {{- else }}
          startupProbe:
            grpc:
              port: {{ $grpc.port }}
            periodSeconds: 5
            failureThreshold: 60
          readinessProbe:
            grpc:
              port: {{ $grpc.port }}
              service: {{ .health }}
            periodSeconds: 10
          livenessProbe:
            grpc:
              port: {{ $grpc.port }}
            periodSeconds: 20
            failureThreshold: 3
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: auth
              mountPath: /var/run/lextral/auth
              readOnly: true
            {{- if and .public (not $root.Values.auth.insecureNoAuth) }}
            - name: keys
              mountPath: /var/run/lextral/keys
              readOnly: true
            {{- end }}
            {{- if and .public $root.Values.tls.enabled }}
            - name: tls
              mountPath: /var/run/lextral/tls
              readOnly: true
            {{- end }}
            {{- if .models }}
            - name: models
              mountPath: /models
              readOnly: true
            {{- end }}
            {{- with .mounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        - name: auth
          secret:
            secretName: {{ include "lextral.authSecretName" $root }}
            items:
              - key: service-key
                path: service-key
        {{- if and .public (not $root.Values.auth.insecureNoAuth) }}
        # Mounted whole (no subPath), so edits to the Secret reach the file
        # and the server picks them up without a restart.
        - name: keys
          secret:
            secretName: {{ include "lextral.keysSecretName" $root }}
            items:
              - key: keys.json
                path: keys.json
        {{- end }}
        {{- if and .public $root.Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ required "tls.secretName: the kubernetes.io/tls Secret to serve (tls.enabled is on)" $root.Values.tls.secretName }}
        {{- end }}
        {{- if .models }}
        - name: models
          emptyDir: {}
        {{- end }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "lextral.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  selector:
    {{- include "lextral.selectorLabels" (dict "root" $root "component" .component) | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      {{- if hasPrefix "grpc" .name }}
      appProtocol: grpc
      {{- end }}
    {{- end }}
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
{{- end -}}
