// Command kube is Anodyne's multi-call Kubernetes release binary (hyperkube style).
//
// It runs one upstream program per process, chosen by the name it was invoked as
// (a symlink such as bin/kube-apiserver) or by its first argument (kube kube-apiserver ...).
// Each component must run in its own process: global flags, feature gates and metric
// registries of the upstream programs collide when two share one process.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"
)

type program func(args []string) int

var programs = map[string]program{
	"kube-apiserver":          runAPIServer,
	"kube-controller-manager": runControllerManager,
	"kube-scheduler":          runScheduler,
	"kubelet":                 runKubelet,
	"kube-proxy":              runProxy,
	"kubectl":                 runKubectl,
	"etcd":                    runEtcd,
	"etcdctl":                 runEtcdctl,
	"etcdutl":                 runEtcdutl,
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args
	if _, ok := programs[name]; !ok {
		if len(os.Args) < 2 {
			usage()
			os.Exit(2)
		}
		name = os.Args[1]
		args = os.Args[1:]
	}
	run, ok := programs[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "kube: unknown program %q\n", name)
		usage()
		os.Exit(2)
	}
	// Upstream commands read os.Args themselves (cobra, etcdmain), so present them
	// with the argv they would see as standalone binaries.
	os.Args = args
	// etcdctl's package init turns on cobra's global prefix matching; keep it to etcdctl.
	cobra.EnablePrefixMatching = name == "etcdctl"
	os.Exit(run(args))
}

func usage() {
	names := make([]string, 0, len(programs))
	for n := range programs {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(os.Stderr, "usage: kube PROGRAM [args...]   (or invoke through a symlink named PROGRAM)")
	for _, n := range names {
		fmt.Fprintln(os.Stderr, "  "+n)
	}
}
