package main

import (
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"

	// Register the in-tree API groups and client auth plugins the standalone binaries register.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
)

func runAPIServer(_ []string) int { return cli.Run(apiserver.NewAPIServerCommand()) }
func runControllerManager(_ []string) int {
	return cli.Run(controllermanager.NewControllerManagerCommand())
}
func runScheduler(_ []string) int { return cli.Run(scheduler.NewSchedulerCommand()) }
func runProxy(_ []string) int     { return cli.Run(proxy.NewProxyCommand()) }

func runKubectl(_ []string) int {
	if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
		cmdutil.CheckErr(err) // prints the error the way kubectl does and exits non-zero
	}
	return 0
}
