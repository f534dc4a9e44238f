{{/* Names, labels and the image of the genfoundry chart. */}}

{{- define "genfoundry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "genfoundry.fullname" -}}
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

{{- define "genfoundry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "genfoundry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "genfoundry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "genfoundry.labels" -}}
helm.sh/chart: {{ include "genfoundry.chart" . }}
{{ include "genfoundry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "genfoundry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret with database-url, vault.key, audit.key (and vector-store-url): the user's or ours. */}}
{{- define "genfoundry.secretName" -}}
{{- default (include "genfoundry.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "genfoundry.configName" -}}
{{- printf "%s-settings" (include "genfoundry.fullname" .) -}}
{{- end -}}

{{/* The environment both the gateway and the migration Job read the store from. */}}
{{- define "genfoundry.storeEnv" -}}
- name: GENFOUNDRY_HOME
  value: /var/lib/genfoundry
- name: GENFOUNDRY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "genfoundry.secretName" . }}
      key: database-url
- name: GENFOUNDRY_VECTOR_STORE
  valueFrom:
    secretKeyRef:
      name: {{ include "genfoundry.secretName" . }}
      key: {{ ternary "database-url" "vector-store-url" .Values.vectorStore.sameAsDatabase }}
{{- end -}}
