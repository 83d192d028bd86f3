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
{{- define "ratatouille.sqlHost" -}}{{ include "ratatouille.fullname" . }}-sql{{- end -}}
{{- define "ratatouille.sqlEnvConfigMap" -}}{{ include "ratatouille.fullname" . }}-sql-env{{- end -}}

{{/* ---- the resource profile ----------------------------------------------------------------- */}}

{{/* The selected profile (a dict); fails with a readable message for an unknown name. */}}
{{- define "ratatouille.profile" -}}
{{- $p := index .Values.profiles .Values.profile -}}
{{- if not $p -}}
{{- fail (printf "profile %q is not defined in `profiles` (defined: %s)" .Values.profile (keys .Values.profiles | sortAlpha | join ", ")) -}}
{{- end -}}
{{- range $part := list "code" "webserver" "daemon" "runWorker" "postgres" "minio" "sql" -}}
{{- if not (index $p $part) -}}
{{- fail (printf "profiles.%s.%s is missing: a profile sets code, webserver, daemon, runWorker, postgres, minio and sql resources" $.Values.profile $part) -}}
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

{{/*
DuckDB's settings for the pod of one part of the profile, from that part's limits:
(dict "ctx" $ "part" "runWorker"). memory_limit = duckdb.memoryFraction x its memory limit (MiB),
threads = its cpu limit in whole cores (at least 1).
*/}}
{{- define "ratatouille.duckdbMemoryLimitOf" -}}
{{- $p := include "ratatouille.profile" .ctx | fromYaml -}}
{{- $mib := include "ratatouille.mebibytes" (index $p .part).limits.memory | float64 -}}
{{- printf "%dMiB" (mulf $mib .ctx.Values.duckdb.memoryFraction | floor | int64) -}}
{{- end -}}

{{- define "ratatouille.duckdbThreadsOf" -}}
{{- $p := include "ratatouille.profile" .ctx | fromYaml -}}
{{- include "ratatouille.cores" (index $p .part).limits.cpu -}}
{{- end -}}

{{/* The run worker's (the env ConfigMap of every Dagster pod); the SQL endpoint has its own. */}}
{{- define "ratatouille.duckdbMemoryLimit" -}}
{{- include "ratatouille.duckdbMemoryLimitOf" (dict "ctx" . "part" "runWorker") -}}
{{- end -}}

{{- define "ratatouille.duckdbThreads" -}}
{{- include "ratatouille.duckdbThreadsOf" (dict "ctx" . "part" "runWorker") -}}
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

{{- define "ratatouille.sqlSecret" -}}
{{- default (printf "%s-sql" (include "ratatouille.fullname" .)) .Values.sql.existingSecret -}}
{{- end -}}

{{/*
Where the storage is, without secrets: ConfigMap data lines, the same in the env ConfigMap of
the Dagster pods and run workers and in the SQL endpoint's (the tables it serves are theirs).
*/}}
{{- define "ratatouille.storageSettings" -}}
{{- $bucket := .Values.minio.bucket -}}
RATATOUILLE_WAREHOUSE: {{ printf "s3://%s/warehouse" $bucket | quote }}
RATATOUILLE_LANDING: {{ printf "s3://%s/landing" $bucket | quote }}
RATATOUILLE_QUARANTINE: {{ printf "s3://%s/quarantine" $bucket | quote }}
RATATOUILLE_S3_ENDPOINT: {{ include "ratatouille.s3Endpoint" . | quote }}
RATATOUILLE_S3_REGION: {{ .Values.minio.region | quote }}
# The catalog's URI without its password (RATATOUILLE_CATALOG_PASSWORD, from the Secret).
RATATOUILLE_CATALOG_URI: {{ printf "postgresql+psycopg2://%s@%s:%s/%s" .Values.postgres.user (include "ratatouille.postgresHost" .) (include "ratatouille.postgresPort" .) .Values.postgres.database | quote }}
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
{{ include "ratatouille.storageSecretEnv" . }}
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

{{/* The catalog's password and the S3 keys: what reading (and writing) the tables takes. */}}
{{- define "ratatouille.storageSecretEnv" -}}
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

{{/*
Every pod that reads RATATOUILLE_* settings (and the run workers, through the instance config):
no {SERVICE}_PORT=tcp://... variables from the namespace's Services. Nothing here finds a service
that way (DNS does), and with the release named "ratatouille" the SQL endpoint's Service,
ratatouille-sql, would set RATATOUILLE_SQL_PORT=tcp://<ip>:5433, which the settings refuse.
*/}}
{{- define "ratatouille.noServiceLinks" -}}
enableServiceLinks: false
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

{{/* ---- the SQL endpoint (rat serve) ----------------------------------------------------------- */}}

{{- define "ratatouille.sqlPort" -}}5433{{- end -}}
{{- define "ratatouille.sqlTlsDir" -}}/etc/ratatouille/sql-tls{{- end -}}

{{/*
The SQL endpoint's non-secret settings (ConfigMap data lines): the tables' storage, as every
Dagster pod has it; its own DuckDB, sized from the profile's `sql` limits; the server's settings.
*/}}
{{- define "ratatouille.sqlSettings" -}}
{{ include "ratatouille.storageSettings" . }}
RATATOUILLE_DUCKDB_MEMORY_LIMIT: {{ include "ratatouille.duckdbMemoryLimitOf" (dict "ctx" . "part" "sql") | quote }}
RATATOUILLE_DUCKDB_THREADS: {{ include "ratatouille.duckdbThreadsOf" (dict "ctx" . "part" "sql") | quote }}
# DuckDB spills into the pod's spill emptyDir (sql.yaml).
RATATOUILLE_DUCKDB_TEMP_DIRECTORY: "/app/.tmp"
# All interfaces of the pod: the Service (and port-forward) reach it there.
RATATOUILLE_SQL_HOST: "0.0.0.0"
RATATOUILLE_SQL_PORT: {{ include "ratatouille.sqlPort" . | quote }}
RATATOUILLE_SQL_USER: {{ .Values.sql.user | quote }}
RATATOUILLE_SQL_STATEMENT_TIMEOUT_SECONDS: {{ .Values.sql.statementTimeoutSeconds | int64 | quote }}
RATATOUILLE_SQL_ROW_LIMIT: {{ .Values.sql.rowLimit | int64 | quote }}
{{- if .Values.sql.tls.existingSecret }}
RATATOUILLE_SQL_TLS_CERT: {{ printf "%s/tls.crt" (include "ratatouille.sqlTlsDir" .) | quote }}
RATATOUILLE_SQL_TLS_KEY: {{ printf "%s/tls.key" (include "ratatouille.sqlTlsDir" .) | quote }}
{{- end }}
{{- end -}}

{{/*
The SQL endpoint's probe: python (the image's venv, with psycopg2) logs in as the one user over
loopback and, with (dict "query" true), runs SELECT 1, which brings the views up to date from the
catalog first (one catalog query). sslmode prefer: the same command with and without TLS.
*/}}
{{- define "ratatouille.sqlProbe" -}}
{{- $script := "import os, psycopg2; c = psycopg2.connect(host='127.0.0.1', port=os.environ['RATATOUILLE_SQL_PORT'], user=os.environ['RATATOUILLE_SQL_USER'], password=os.environ['RATATOUILLE_SQL_PASSWORD'], dbname='lakehouse', connect_timeout=5)" -}}
{{- if .query -}}
{{- $script = printf "%s; c.cursor().execute('SELECT 1')" $script -}}
{{- end -}}
{{- list "python" "-c" (printf "%s; c.close()" $script) | toJson -}}
{{- end -}}
