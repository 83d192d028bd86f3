{{/* ---- names and labels ------------------------------------------------------------------ */}}

{{- define "ratatouille.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ratatouille.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ratatouille.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "code"). */}}
{{- define "ratatouille.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ratatouille.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The standard Kubernetes labels; call with (dict "ctx" $ "component" "code"). */}}
{{- define "ratatouille.labels" -}}
helm.sh/chart: {{ include "ratatouille.chart" .ctx }}
{{ include "ratatouille.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: ratatouille
{{- end -}}

{{- define "ratatouille.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ratatouille.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ratatouille.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ratatouille.codeHost" -}}{{ include "ratatouille.fullname" . }}-code{{- end -}}
{{- define "ratatouille.instanceConfigMap" -}}{{ include "ratatouille.fullname" . }}-instance{{- end -}}
{{- define "ratatouille.envConfigMap" -}}{{ include "ratatouille.fullname" . }}-env{{- end -}}
{{- define "ratatouille.workspaceConfigMap" -}}{{ include "ratatouille.fullname" . }}-workspace{{- end -}}
{{- define "ratatouille.jobNamespace" -}}{{ default .Release.Namespace .Values.runLauncher.jobNamespace }}{{- end -}}

{{/* ---- the resource profile ----------------------------------------------------------------- */}}

{{/* The selected profile (a dict); fails with a readable message for an unknown name. */}}
{{- define "ratatouille.profile" -}}
{{- $p := index .Values.profiles .Values.profile -}}
{{- if not $p -}}
{{- fail (printf "profile %q is not defined in `profiles` (defined: %s)" .Values.profile (keys .Values.profiles | sortAlpha | join ", ")) -}}
{{- end -}}
{{- range $part := list "code" "webserver" "daemon" "runWorker" "postgres" "minio" -}}
{{- if not (index $p $part) -}}
{{- fail (printf "profiles.%s.%s is missing: a profile sets code, webserver, daemon, runWorker, postgres and minio resources" $.Values.profile $part) -}}
{{- end -}}
{{- end -}}
{{- toYaml $p -}}
{{- end -}}

{{/* Resources of one part of the profile: (dict "ctx" $ "part" "code"). */}}
{{- define "ratatouille.resources" -}}
{{- $p := include "ratatouille.profile" .ctx | fromYaml -}}
{{- toYaml (index $p .part) -}}
{{- end -}}

{{/* A memory quantity (<n>Mi or <n>Gi) in MiB. */}}
{{- define "ratatouille.mebibytes" -}}
{{- $q := toString . -}}
{{- if hasSuffix "Gi" $q -}}{{ mul (trimSuffix "Gi" $q | int64) 1024 }}
{{- else if hasSuffix "Mi" $q -}}{{ trimSuffix "Mi" $q | int64 }}
{{- else -}}{{ fail (printf "memory %q: write it as <n>Mi or <n>Gi" $q) }}
{{- end -}}
{{- end -}}

{{/* Whole cores of a cpu quantity (<n> or <n>m), at least 1. */}}
{{- define "ratatouille.cores" -}}
{{- $q := toString . -}}
{{- $n := 0 -}}
{{- if hasSuffix "m" $q -}}{{- $n = div (trimSuffix "m" $q | int64) 1000 -}}
{{- else -}}{{- $n = floor (float64 $q) | int64 -}}
{{- end -}}
{{- max 1 $n -}}
{{- end -}}

{{- define "ratatouille.duckdbMemoryLimit" -}}
{{- $p := include "ratatouille.profile" . | fromYaml -}}
{{- $mib := include "ratatouille.mebibytes" $p.runWorker.limits.memory | float64 -}}
{{- printf "%dMiB" (mulf $mib .Values.duckdb.memoryFraction | floor | int64) -}}
{{- end -}}

{{- define "ratatouille.duckdbThreads" -}}
{{- $p := include "ratatouille.profile" . | fromYaml -}}
{{- include "ratatouille.cores" $p.runWorker.limits.cpu -}}
{{- end -}}

{{- define "ratatouille.maxConcurrentRuns" -}}
{{- $p := include "ratatouille.profile" . | fromYaml -}}
{{- if kindIs "invalid" .Values.runQueue.maxConcurrentRuns -}}{{ $p.maxConcurrentRuns }}{{- else -}}{{ .Values.runQueue.maxConcurrentRuns }}{{- end -}}
{{- end -}}

{{/* ---- storage endpoints and secrets ------------------------------------------------------- */}}

{{- define "ratatouille.postgresHost" -}}
{{- if .Values.postgres.bundled -}}{{ include "ratatouille.fullname" . }}-postgres
{{- else -}}{{ required "postgres.external.host is required when postgres.bundled is false" .Values.postgres.external.host }}
{{- end -}}
{{- end -}}

{{- define "ratatouille.postgresPort" -}}
{{- if .Values.postgres.bundled -}}5432{{- else -}}{{ .Values.postgres.external.port }}{{- end -}}
{{- end -}}

{{- define "ratatouille.postgresSecret" -}}
{{- default (printf "%s-postgres" (include "ratatouille.fullname" .)) .Values.postgres.existingSecret -}}
{{- end -}}

{{- define "ratatouille.s3Endpoint" -}}
{{- if .Values.minio.bundled -}}http://{{ include "ratatouille.fullname" . }}-minio:9000
{{- else -}}{{ required "minio.external.endpoint is required when minio.bundled is false (e.g. https://s3.eu-west-1.amazonaws.com)" .Values.minio.external.endpoint }}
{{- end -}}
{{- end -}}

{{- define "ratatouille.s3Secret" -}}
{{- default (printf "%s-s3" (include "ratatouille.fullname" .)) .Values.minio.existingSecret -}}
{{- end -}}

{{/*
A password for a chart-made Secret: the value given, else the one already in the cluster (kept
across upgrades), else a generated one (bundled service) or a readable failure (external one).
Call with (dict "ctx" $ "secret" name "key" key "value" v "what" "postgres.password" "generate" bool).
*/}}
{{- define "ratatouille.secretValue" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else if .generate -}}
{{- randAlphaNum 32 -}}
{{- else -}}
{{- fail (printf "%s is required (or name an existing Secret): the chart cannot generate the password of an external service" .what) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ---- what every Dagster pod (and run worker) shares ------------------------------------------- */}}

{{/*
Secret-backed variables: the same list in the code location, webserver, daemon and (through the
run launcher's run_k8s_config) every run worker and step pod. Values never leave the Secrets.
*/}}
{{- define "ratatouille.secretEnv" -}}
- name: DAGSTER_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "ratatouille.postgresSecret" . }}
      key: {{ .Values.postgres.passwordKey }}
- name: RATATOUILLE_CATALOG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "ratatouille.postgresSecret" . }}
      key: {{ .Values.postgres.passwordKey }}
- name: RATATOUILLE_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "ratatouille.s3Secret" . }}
      key: {{ .Values.minio.accessKeyIdKey }}
- name: RATATOUILLE_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ratatouille.s3Secret" . }}
      key: {{ .Values.minio.secretAccessKeyKey }}
{{- /* boto3's names, for the S3 compute log manager of the instance. */}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "ratatouille.s3Secret" . }}
      key: {{ .Values.minio.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ratatouille.s3Secret" . }}
      key: {{ .Values.minio.secretAccessKeyKey }}
{{- end -}}

{{/* envFrom of every Dagster pod: the settings ConfigMap and any extra Secrets. */}}
{{- define "ratatouille.envFrom" -}}
- configMapRef:
    name: {{ include "ratatouille.envConfigMap" . }}
{{- range .Values.extraEnvFromSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{- define "ratatouille.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* readOnlyRootFilesystem: pass a bool. */}}
{{- define "ratatouille.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ . }}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
Volumes of the webserver, daemon and code location: the root filesystem is read-only, so /tmp and
DAGSTER_HOME are emptyDirs, the instance's dagster.yaml comes from its ConfigMap.
*/}}
{{- define "ratatouille.dagsterVolumes" -}}
- name: tmp
  emptyDir: {}
- name: dagster-home
  emptyDir: {}
- name: instance
  configMap:
    name: {{ include "ratatouille.instanceConfigMap" . }}
- name: workspace
  configMap:
    name: {{ include "ratatouille.workspaceConfigMap" . }}
{{- end -}}

{{- define "ratatouille.dagsterVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dagster-home
  mountPath: /opt/dagster/home
- name: instance
  mountPath: /opt/dagster/home/dagster.yaml
  subPath: dagster.yaml
  readOnly: true
- name: workspace
  mountPath: /opt/dagster/workspace
  readOnly: true
{{- end -}}

{{/* Pod annotations that roll the Dagster pods when their configuration changes. */}}
{{- define "ratatouille.configChecksums" -}}
checksum/instance: {{ include (print .Template.BasePath "/configmap-instance.yaml") . | sha256sum }}
checksum/env: {{ include (print .Template.BasePath "/configmap-env.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ratatouille.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
