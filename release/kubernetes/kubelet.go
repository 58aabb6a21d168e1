//go:build !kube_minor_33

// The kubelet entry point from Kubernetes 1.34 on: the command takes a context.
package main

import (
	"context"

	"k8s.io/component-base/cli"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func runKubelet(_ []string) int {
	// The kubelet command sets up its own signal handling; it must not be done twice.
	return cli.Run(kubelet.NewKubeletCommand(context.Background()))
}
