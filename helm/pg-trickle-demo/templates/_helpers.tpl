{{/* Names --------------------------------------------------------------------------------------------- */}}
{{- define "pgtd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pgtd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; call with (dict "ctx" $ "component" "generator") */}}
{{- define "pgtd.componentName" -}}
{{- printf "%s-%s" (include "pgtd.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------------------- */}}
{{- define "pgtd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgtd.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pgtd.labels" -}}
{{ include "pgtd.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pg-trickle-demo
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Release-wide selector (every pod of this release) */}}
{{- define "pgtd.releaseSelector" -}}
app.kubernetes.io/name: {{ include "pgtd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Images ---------------------------------------------------------------------------------------------- */}}
{{/* call with (dict "ctx" $ "component" "generator") */}}
{{- define "pgtd.image" -}}
{{- $img := .ctx.Values.image -}}
{{- $tag := default .ctx.Chart.AppVersion $img.tag -}}
{{- if $img.registry -}}
{{- printf "%s/%s/%s:%s" $img.registry $img.repository .component $tag -}}
{{- else -}}
{{- printf "%s/%s:%s" $img.repository .component $tag -}}
{{- end -}}
{{- end -}}

{{/* Secrets --------------------------------------------------------------------------------------------- */}}
{{- define "pgtd.secretName" -}}
{{- default (include "pgtd.componentName" (dict "ctx" . "component" "credentials")) .Values.auth.existingSecret -}}
{{- end -}}

{{/* An env entry from the credentials Secret; call with (dict "ctx" $ "name" "DEMO_PASSWORD" "key" "demo-password") */}}
{{- define "pgtd.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "pgtd.secretName" .ctx }}
      key: {{ .key }}
{{- end -}}

{{/* Database -------------------------------------------------------------------------------------------- */}}
{{- define "pgtd.cnpgClusterName" -}}
{{- include "pgtd.componentName" (dict "ctx" . "component" "pg") -}}
{{- end -}}

{{- define "pgtd.postgresHost" -}}
{{- if eq .Values.postgres.mode "external" -}}
{{- required "postgres.external.host is required with postgres.mode=external" .Values.postgres.external.host -}}
{{- else if eq .Values.postgres.mode "cnpg" -}}
{{- printf "%s-rw" (include "pgtd.cnpgClusterName" .) -}}
{{- else -}}
{{- include "pgtd.componentName" (dict "ctx" . "component" "postgres") -}}
{{- end -}}
{{- end -}}

{{- define "pgtd.postgresPort" -}}
{{- if eq .Values.postgres.mode "external" -}}
{{- .Values.postgres.external.port -}}
{{- else if eq .Values.postgres.mode "cnpg" -}}
5432
{{- else -}}
{{- .Values.postgres.port -}}
{{- end -}}
{{- end -}}

{{/* Connection variables (libpq PG*) shared by every service; call with (dict "ctx" $ "user" "demo_writer") */}}
{{- define "pgtd.dbEnv" -}}
- name: DEMO_SCENARIO
  value: {{ .ctx.Values.scenario | quote }}
- name: LOG_LEVEL
  value: {{ .ctx.Values.logLevel | quote }}
- name: PGHOST
  value: {{ include "pgtd.postgresHost" .ctx | quote }}
- name: PGPORT
  value: {{ include "pgtd.postgresPort" .ctx | quote }}
- name: PGUSER
  value: {{ .user | quote }}
{{- if eq .ctx.Values.postgres.mode "external" }}
- name: PGSSLMODE
  value: {{ .ctx.Values.postgres.external.sslmode | quote }}
{{- end }}
{{- end -}}

{{/* Pod and container security (restricted Pod Security Standard) ---------------------------------------- */}}
{{- define "pgtd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "pgtd.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "pgtd.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/* Scrape annotations for Prometheus without the operator; call with (dict "ctx" $ "port" 9188) */}}
{{- define "pgtd.scrapeAnnotations" -}}
{{- if .ctx.Values.monitoring.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{- define "pgtd.validate" -}}
{{- if and (eq .Values.postgres.mode "external") (not .Values.auth.existingSecret) -}}
{{- fail "postgres.mode=external needs auth.existingSecret: a Secret with postgres-password (the superuser's password on your server), demo-password, demo-writer-password and demo-reader-password" -}}
{{- end -}}
{{- end -}}

{{/* GitOps ordering and one-shot Jobs ----------------------------------------------------------------------- */}}
{{/* Argo CD sync waves: -3 CRD and the credentials Job's RBAC, -2 the credentials Job, -1 the database,
0 the bootstrap Job, 1 the services. Helm (--wait) and Flux ignore them: there every pod waits by itself (the
database for its Secret, the bootstrap for the database, the services' readiness for the bootstrap). */}}
{{- define "pgtd.syncWave" -}}
argocd.argoproj.io/sync-wave: {{ . | quote }}
{{- end -}}

{{/* A one-shot Job as Argo CD sees it: a Sync hook (re-created on every sync, never diffed, so a Job that
ttlSecondsAfterFinished removed is not "missing"); call with the wave. */}}
{{- define "pgtd.jobAnnotations" -}}
{{ include "pgtd.syncWave" . }}
argocd.argoproj.io/hook: Sync
argocd.argoproj.io/hook-delete-policy: BeforeHookCreation
{{- end -}}

{{/* "<fullname>-<component>[-<scenario>]-<revision>": a new Job per release revision (and per scenario), so
`helm upgrade` creates a Job instead of patching an immutable one. Call with
(dict "ctx" $ "component" "bootstrap" "scenario" true). At most 63 characters (the job-name label). */}}
{{- define "pgtd.jobName" -}}
{{- $suffix := printf "%d" (int .ctx.Release.Revision) -}}
{{- if .scenario -}}{{- $suffix = printf "%s-%s" .ctx.Values.scenario $suffix -}}{{- end -}}
{{- $prefix := include "pgtd.componentName" (dict "ctx" .ctx "component" .component) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix $suffix -}}
{{- end -}}
