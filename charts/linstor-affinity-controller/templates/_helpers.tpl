{{/* The chart name, or nameOverride. */}}
{{- define "linstor-affinity-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: fullnameOverride, else the release name when it contains the chart name,
else <release>-<chart name>; at most 63 characters (a DNS label).
*/}}
{{- define "linstor-affinity-controller.fullname" -}}
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

{{- define "linstor-affinity-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "linstor-affinity-controller.labels" -}}
helm.sh/chart: {{ include "linstor-affinity-controller.chart" . }}
{{ include "linstor-affinity-controller.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "linstor-affinity-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "linstor-affinity-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "linstor-affinity-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "linstor-affinity-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Whether leader election is on (options.leaderElection, off when the key is removed). */}}
{{- define "linstor-affinity-controller.leaderElection" -}}
{{- if and (hasKey .Values.options "leaderElection") (eq (toString .Values.options.leaderElection) "true") }}true{{ end }}
{{- end }}

{{/*
A value as a command-line flag value: whole numbers without exponent or fraction (YAML numbers
arrive as floats), everything else as printed.
*/}}
{{- define "linstor-affinity-controller.flagValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/*
Whether an API group version is served. Against a cluster Helm asks the API server; offline
(`helm template`) it assumes a fixed set, so the Kubernetes version (--kube-version) must also be
at least the one that introduced the group version.
*/}}
{{- define "linstor-affinity-controller.served" -}}
{{- $root := index . 0 }}
{{- if and ($root.Capabilities.APIVersions.Has (index . 1)) (semverCompare (printf ">=%s-0" (index . 2)) $root.Capabilities.KubeVersion.Version) }}true{{ end }}
{{- end }}

{{/*
The PodDisruptionBudget's API version: policy/v1 where served (Kubernetes 1.21+), else policy/v1beta1.
*/}}
{{- define "linstor-affinity-controller.pdbApiVersion" -}}
{{- if include "linstor-affinity-controller.served" (list . "policy/v1" "1.21") }}policy/v1{{ else }}policy/v1beta1{{ end }}
{{- end }}

{{/*
The HorizontalPodAutoscaler's API version: autoscaling/v2 where served (Kubernetes 1.23+), else
autoscaling/v2beta2 (1.12+), else autoscaling/v1.
*/}}
{{- define "linstor-affinity-controller.hpaApiVersion" -}}
{{- if include "linstor-affinity-controller.served" (list . "autoscaling/v2" "1.23") }}autoscaling/v2
{{- else if include "linstor-affinity-controller.served" (list . "autoscaling/v2beta2" "1.12") }}autoscaling/v2beta2
{{- else }}autoscaling/v1
{{- end }}
{{- end }}

{{/* Whether the ServiceMonitor and PrometheusRule kinds can be rendered. */}}
{{- define "linstor-affinity-controller.monitoringApi" -}}
{{- if or .Values.monitoring.forceMonitoringAPI (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}

{{/*
The LINSTOR controller as the Piraeus Operator deployed it, found through the API server (helm
lookup; nothing with `helm template`), as JSON: "service" (<name>.<namespace>.svc), "clientSecret",
"source" (what was found), or "problem" (why nothing was).
- Operator v2: exactly one piraeus.io/v1 LinstorCluster. Its client secret is
  spec.apiTLS.clientSecretName (linstor-client-tls when spec.apiTLS is present without it); its
  Service is the one labelled app.kubernetes.io/component=linstor-controller and
  app.kubernetes.io/instance=<cluster name>.
- Operator v1: exactly one piraeus.linbit.com/v1 (or linstor.linbit.com/v1) LinstorController in
  the release namespace. Its client secret is spec.linstorHttpsClientSecret; its Service has its
  name and namespace.
*/}}
{{- define "linstor-affinity-controller.detectLinstor" -}}
{{- $found := dict "problems" (list) }}
{{- if .Capabilities.APIVersions.Has "piraeus.io/v1/LinstorCluster" }}
{{- $clusters := (lookup "piraeus.io/v1" "LinstorCluster" "" "").items | default list }}
{{- if eq (len $clusters) 1 }}
{{- $cluster := index $clusters 0 }}
{{- $spec := $cluster.spec | default dict }}
{{- $secret := "" }}
{{- if hasKey $spec "apiTLS" }}
{{- $secret = (get ($spec.apiTLS | default dict) "clientSecretName") | default "linstor-client-tls" }}
{{- end }}
{{- range (lookup "v1" "Service" "" "").items | default list }}
{{- $labels := .metadata.labels | default dict }}
{{- if and (not (hasKey $found "service")) (eq (get $labels "app.kubernetes.io/component") "linstor-controller") (eq (get $labels "app.kubernetes.io/instance") $cluster.metadata.name) }}
{{- $_ := set $found "service" (printf "%s.%s.svc" .metadata.name .metadata.namespace) }}
{{- end }}
{{- end }}
{{- if hasKey $found "service" }}
{{- $_ := set $found "clientSecret" $secret }}
{{- $_ := set $found "source" (printf "LinstorCluster %s" $cluster.metadata.name) }}
{{- else }}
{{- $_ := set $found "problems" (append $found.problems (printf "no Service labelled app.kubernetes.io/component=linstor-controller, app.kubernetes.io/instance=%s" $cluster.metadata.name)) }}
{{- end }}
{{- else }}
{{- $_ := set $found "problems" (append $found.problems (printf "%d piraeus.io/v1 LinstorCluster objects, not one" (len $clusters))) }}
{{- end }}
{{- end }}
{{- range $groupVersion := list "piraeus.linbit.com/v1" "linstor.linbit.com/v1" }}
{{- if and (not (hasKey $found "source")) ($.Capabilities.APIVersions.Has (printf "%s/LinstorController" $groupVersion)) }}
{{- $controllers := (lookup $groupVersion "LinstorController" $.Release.Namespace "").items | default list }}
{{- if eq (len $controllers) 1 }}
{{- $controller := index $controllers 0 }}
{{- $_ := set $found "service" (printf "%s.%s.svc" $controller.metadata.name $controller.metadata.namespace) }}
{{- $_ := set $found "clientSecret" (get ($controller.spec | default dict) "linstorHttpsClientSecret" | default "") }}
{{- $_ := set $found "source" (printf "%s LinstorController %s" $groupVersion $controller.metadata.name) }}
{{- else }}
{{- $_ := set $found "problems" (append $found.problems (printf "%d %s LinstorController objects in namespace %s, not one" (len $controllers) $groupVersion $.Release.Namespace)) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $found }}
{{- end }}

{{/*
How to reach LINSTOR, as JSON: "endpoint" (LS_CONTROLLERS) and "clientSecret" (may be empty): the
values linstor.endpoint and linstor.clientSecret where set, else detected. A detected endpoint is
https://<service>:3371 with a client secret, else http://<service>:3370. Fails when no endpoint is
set or found.
*/}}
{{- define "linstor-affinity-controller.linstor" -}}
{{- $endpoint := .Values.linstor.endpoint | default "" }}
{{- $secret := .Values.linstor.clientSecret | default "" }}
{{- if not (and $endpoint $secret) }}
{{- $detected := include "linstor-affinity-controller.detectLinstor" . | fromJson }}
{{- if not $secret }}
{{- $secret = $detected.clientSecret | default "" }}
{{- end }}
{{- if not $endpoint }}
{{- if $detected.service }}
{{- if $secret }}
{{- $endpoint = printf "https://%s:3371" $detected.service }}
{{- else }}
{{- $endpoint = printf "http://%s:3370" $detected.service }}
{{- end }}
{{- else }}
{{- $why := "" }}
{{- if $detected.problems }}
{{- $why = printf " (%s)" (join "; " $detected.problems) }}
{{- end }}
{{- fail (printf "no LINSTOR controller found%s: specify linstor.endpoint, e.g. --set linstor.endpoint=http://linstor-controller.<namespace>.svc:3370" $why) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson (dict "endpoint" $endpoint "clientSecret" $secret) }}
{{- end }}

{{/*
The PodDisruptionBudget is rendered only when it cannot block a drain: minAvailable below the
smallest number of replicas (a percentage: more than one replica).
*/}}
{{- define "linstor-affinity-controller.pdbRendered" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if .Values.autoscaling.enabled }}
{{- $replicas = int .Values.autoscaling.minReplicas }}
{{- end }}
{{- $min := .Values.podDisruptionBudget.minAvailable }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- if kindIs "string" $min }}
{{- if gt $replicas 1 }}true{{ end }}
{{- else if lt (int $min) $replicas }}true
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks nodeDrain (also when off, so a typo shows before it is turned on): the policies must be
ones the controller knows, and the drain flags must not also come from options, which would pass
them without the nodes rule they need (the controller then stops at start).
*/}}
{{- define "linstor-affinity-controller.checkNodeDrain" -}}
{{- $drain := .Values.nodeDrain }}
{{- range $key, $known := dict "drainPolicy" (list "Ignore" "NoSchedule" "Evacuate") "deletePolicy" (list "Orphan" "Evacuate") }}
{{- $value := get $drain $key }}
{{- if not (has $value $known) }}
{{- fail (printf "nodeDrain.%s %q is not one of %s" $key (toString $value) (join ", " $known)) }}
{{- end }}
{{- end }}
{{- range $option, $key := dict "nodeDrainPolicy" "drainPolicy" "nodeDeletePolicy" "deletePolicy" "maxConcurrentEvacuations" "maxConcurrentEvacuations" }}
{{- if and (hasKey $.Values.options $option) (not (kindIs "invalid" (index $.Values.options $option))) }}
{{- fail (printf "options.%s: set nodeDrain.%s instead, with nodeDrain.enabled=true (which also grants the nodes rule)" $option $key) }}
{{- end }}
{{- end }}
{{- end }}
