// Package helm pins the upstream helm v3 client, built by release/build.sh with
// `go build helm.sh/helm/v3/cmd/helm` (see the tool directive in go.mod).
package helm
