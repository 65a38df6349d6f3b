{{/*
A service Deployment (+ its Service): restricted security, /tmp emptyDir, probes on the HTTP port.
Call with (dict "ctx" $ "component" "exporter" "port" 9188 "user" "demo_reader" "env" $extraEnvYaml
                "values" .Values.exporter "scrape" true "service" true "readiness" true)
*/}}
{{- define "pgtd.httpWorkload" -}}
{{- $ctx := .ctx -}}
{{- $name := include "pgtd.componentName" (dict "ctx" $ctx "component" .component) -}}
{{- if .service }}
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "pgtd.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  annotations:
    {{- include "pgtd.syncWave" "1" | nindent 4 }}
spec:
  type: {{ .values.service.type }}
  selector:
    {{- include "pgtd.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  ports:
    - name: http
      port: {{ .port }}
      targetPort: http
      protocol: TCP
      {{- if and (eq .values.service.type "NodePort") .values.service.nodePort }}
      nodePort: {{ .values.service.nodePort }}
      {{- end }}
---
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "pgtd.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  annotations:
    {{- include "pgtd.syncWave" "1" | nindent 4 }}
spec:
  replicas: 1
  {{- if .recreate }}
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "pgtd.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "pgtd.labels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
      {{- if .scrape }}
      {{- with include "pgtd.scrapeAnnotations" (dict "ctx" $ctx "port" .port) }}
      annotations:
        {{- . | nindent 8 }}
      {{- end }}
      {{- end }}
    spec:
      serviceAccountName: {{ .serviceAccount | default (include "pgtd.fullname" $ctx) }}
      automountServiceAccountToken: {{ .automountToken | default false }}
      {{- with include "pgtd.imagePullSecrets" $ctx }}{{ . | nindent 6 }}{{ end }}
      securityContext:
        {{- include "pgtd.podSecurityContext" $ctx | nindent 8 }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .component }}
          image: {{ include "pgtd.image" (dict "ctx" $ctx "component" .component) | quote }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          env:
            {{- include "pgtd.dbEnv" (dict "ctx" $ctx "user" .user) | nindent 12 }}
            {{- .env | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ .port }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            initialDelaySeconds: 5
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          {{- if .readiness }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 3
          {{- end }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- include "pgtd.containerSecurityContext" $ctx | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            medium: Memory
            sizeLimit: 64Mi
{{- end -}}
