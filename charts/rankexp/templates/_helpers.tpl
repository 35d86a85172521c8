{{- define "rankexp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rankexp.labels" -}}
app.kubernetes.io/name: rankexp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rankexp.operatorSelector" -}}
app.kubernetes.io/name: rankexp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "rankexp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "rankexp.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rankexp.prometheusUrl" -}}
{{- if .Values.operator.prometheusUrl -}}
{{- .Values.operator.prometheusUrl -}}
{{- else if .Values.prometheus.enabled -}}
{{- printf "http://%s-prometheus.%s.svc:9090" (include "rankexp.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- /* Hardening shared by every container the chart runs. */ -}}
{{- define "rankexp.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- /* The series contract: namespace and experiment from the pod, for every rankexp
ranker and router pod (the variant label comes from the process itself). */ -}}
{{- define "rankexp.relabelings" -}}
- sourceLabels: [__meta_kubernetes_namespace]
  targetLabel: namespace
- sourceLabels: [__meta_kubernetes_pod_label_rankexp_io_experiment]
  targetLabel: experiment
- sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: pod
{{- end -}}
