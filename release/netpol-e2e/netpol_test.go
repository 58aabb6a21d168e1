// Package netpole2e is upstream Kubernetes' NetworkPolicy end-to-end suite (test/e2e/network/netpol) and
// nothing else of test/e2e, compiled by `go test -c` into one program the isolation tests run against a
// real Anodyne cluster (see release/tools.sh and packages/platform/src/isolation.test.ts).
//
// The program takes upstream's e2e.test flags (--kubeconfig, --provider, --ginkgo.focus, ...): the flag
// set-up below registers the framework's own, as test/e2e does for its full suite.
package netpole2e

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"k8s.io/component-base/version"
	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"

	// The suite this program carries.
	_ "k8s.io/kubernetes/test/e2e/network/netpol"

	// The framework's hooks, as the full suite installs them ("skeleton" and "local" providers are built in).
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
)

func TestMain(m *testing.M) {
	showVersion := flag.CommandLine.Bool("version", false, "print the Kubernetes version the suite is built from and exit")
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Get())
		os.Exit(0)
	}
	if flag.CommandLine.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "netpol-e2e: unexpected arguments: %v\n", flag.CommandLine.Args())
		os.Exit(1)
	}
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

func TestNetpol(t *testing.T) {
	e2e.RunE2ETests(t)
}
