//go:build kube_minor_33

// The kubelet entry point of Kubernetes 1.33: the command takes no context.
package main

import (
	"k8s.io/component-base/cli"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func runKubelet(_ []string) int {
	// The kubelet command sets up its own signal handling; it must not be done twice.
	return cli.Run(kubelet.NewKubeletCommand())
}
