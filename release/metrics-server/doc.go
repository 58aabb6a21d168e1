// Package metricsserver pins upstream metrics-server, the resource metrics API behind
// `kubectl top` and CPU/memory HorizontalPodAutoscalers. release/build.sh builds it with
// `go build sigs.k8s.io/metrics-server/cmd/metrics-server` (see the tool directive in go.mod)
// and packs the static binary as the cluster add-on's image.
package metricsserver
