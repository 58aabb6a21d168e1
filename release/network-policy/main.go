// Command network-policy enforces a cluster's NetworkPolicies on one worker: kube-router's network policy
// controller (iptables chains and ipsets for the node's own pods) and nothing else of kube-router — no BGP
// routing, no service proxy (flannel and kube-proxy do those). It takes kube-router's flags for that
// controller (--kubeconfig, --hostname-override, --service-cluster-ip-range, --iptables-sync-period, ...),
// and touches --ready-file after its first full sync, so the node's agent knows policies are in force.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/cloudnativelabs/kube-router/v2/pkg/controllers/netpol"
	"github.com/cloudnativelabs/kube-router/v2/pkg/healthcheck"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// version is kube-router's, set by release/build.sh.
var version = "unknown"

func main() {
	if err := run(); err != nil {
		klog.Errorf("network-policy: %v", err)
		os.Exit(1)
	}
}

func run() error {
	config := options.NewKubeRouterConfig()
	config.AddFlags(pflag.CommandLine)
	readyFile := pflag.String("ready-file", "", "file to create once the first full sync of the policies is done")
	pflag.Parse()
	if config.Version {
		fmt.Printf("network-policy (kube-router %s network policy controller)\n", version)
		return nil
	}
	config.RunFirewall, config.RunRouter, config.RunServiceProxy, config.RunLoadBalancer = true, false, false, false
	if config.Kubeconfig == "" || config.HostnameOverride == "" {
		return fmt.Errorf("--kubeconfig and --hostname-override are required")
	}

	restConfig, err := clientcmd.BuildConfigFromFlags("", config.Kubeconfig)
	if err != nil {
		return fmt.Errorf("reading %s: %w", config.Kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}

	stop := make(chan struct{})
	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods().Informer()
	namespaces := factory.Core().V1().Namespaces().Informer()
	policies := factory.Networking().V1().NetworkPolicies().Informer()
	factory.Start(stop)
	synced := factory.WaitForCacheSync(stop)
	for informer, ok := range synced {
		if !ok {
			return fmt.Errorf("the %v cache did not sync", informer)
		}
	}

	// The controller reads its own Node at start: on a new worker the kubelet may not have registered it yet.
	if err := waitForNode(client, config.HostnameOverride, stop); err != nil {
		return err
	}

	iptables, ipsets, err := netpol.NewIPTablesHandlers(config)
	if err != nil {
		return fmt.Errorf("iptables and ipset: %w", err)
	}
	var ipsetMutex sync.Mutex
	npc, err := netpol.NewNetworkPolicyController(client, config, pods, policies, namespaces, &ipsetMutex, iptables, ipsets)
	if err != nil {
		return err
	}
	if _, err := pods.AddEventHandler(npc.PodEventHandler); err != nil {
		return err
	}
	if _, err := namespaces.AddEventHandler(npc.NamespaceEventHandler); err != nil {
		return err
	}
	if _, err := policies.AddEventHandler(npc.NetworkPolicyEventHandler); err != nil {
		return err
	}

	// Each full sync sends a heartbeat: the first one means the node's pods are under policy.
	heartbeats := make(chan *healthcheck.ControllerHeartbeat, 10)
	go func() {
		first := true
		for range heartbeats {
			if first && *readyFile != "" {
				if err := os.WriteFile(*readyFile, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
					klog.Errorf("network-policy: writing %s: %v", *readyFile, err)
				}
			}
			first = false
		}
	}()

	var wg sync.WaitGroup
	wg.Add(1)
	go npc.Run(heartbeats, stop, &wg)
	klog.Infof("network-policy: enforcing NetworkPolicies for node %s", config.HostnameOverride)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	close(stop)
	wg.Wait()
	return nil
}

// waitForNode returns once the Node named name can be read, asking every 200 ms (the API may be briefly out of reach
// too, while a master restarts); it says why it waits, once per reason.
func waitForNode(client kubernetes.Interface, name string, stop <-chan struct{}) error {
	said := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		cancel()
		if err == nil {
			return nil
		}
		why := err.Error()
		if apierrors.IsNotFound(err) {
			why = "not registered yet"
		}
		if why != said {
			klog.Infof("network-policy: waiting for node %s: %s", name, why)
			said = why
		}
		select {
		case <-stop:
			return fmt.Errorf("stopped while waiting for node %s", name)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
