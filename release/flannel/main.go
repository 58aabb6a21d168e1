// flanneld for Anodyne's clusters: flannel's Kubernetes subnet manager (each node's lease is the
// podCIDR the controller manager allocated) with the host-gw backend (routes to the other nodes'
// pod subnets via their node addresses: every VM shares one L2 segment), built from flannel's Go
// packages. Upstream's own main also links cloud backends whose SDKs the module proxy here does
// not serve; this program links only what a cluster on Anodyne uses, and never sets up
// masquerading (traffic stays on the machine).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/flannel-io/flannel/pkg/backend"
	_ "github.com/flannel-io/flannel/pkg/backend/hostgw"
	_ "github.com/flannel-io/flannel/pkg/backend/vxlan"
	"github.com/flannel-io/flannel/pkg/ipmatch"
	"github.com/flannel-io/flannel/pkg/subnet"
	"github.com/flannel-io/flannel/pkg/subnet/kube"
	"github.com/flannel-io/flannel/pkg/trafficmngr/iptables"
	"github.com/flannel-io/flannel/pkg/version"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	log "k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig-file", "", "kubeconfig of flannel's identity (NODE_NAME names this node)")
	netConf := flag.String("net-config-path", "net-conf.json", "flannel network configuration (Network, Backend)")
	publicIP := flag.String("public-ip", "", "this node's address on the VM network")
	subnetFile := flag.String("subnet-file", "/run/flannel/subnet.env", "where the node's lease is written for the CNI configuration")
	resync := flag.Int("iptables-resync", 5, "seconds between checks of the FORWARD rules")
	showVersion := flag.Bool("version", false, "print flannel's version and exit")
	log.InitFlags(nil)
	flag.Parse()
	if *showVersion {
		fmt.Println("flanneld " + version.Version)
		return
	}
	if err := run(*kubeconfig, *netConf, *publicIP, *subnetFile, *resync); err != nil {
		log.Errorf("flanneld: %v", err)
		os.Exit(1)
	}
}

func run(kubeconfig, netConf, publicIP, subnetFile string, resync int) error {
	if publicIP == "" || os.Getenv("NODE_NAME") == "" {
		return fmt.Errorf("--public-ip and NODE_NAME are required")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; cancel() }()

	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("reading %s: %w", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	// The subnet manager's node cache is looked at once a second until it has synced, and a first list the API
	// refuses (a new cluster whose masters have not applied flannel's RBAC yet) backs off for a second or more: so
	// it is made once flannel may list Nodes, asking every 100 ms.
	if err := waitForNodeList(ctx, client); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting
		}
		return err
	}
	sm, err := kube.NewSubnetManager(ctx, "", kubeconfig, "flannel.alpha.coreos.com", netConf, true)
	if err != nil {
		return fmt.Errorf("subnet manager: %w", err)
	}
	var config *subnet.Config
	for config == nil {
		if config, err = sm.GetNetworkConfig(ctx); err != nil {
			log.Warningf("network config: %v", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
	stack, err := ipmatch.GetIPFamily(config.EnableIPv4, config.EnableIPv6)
	if err != nil {
		return err
	}
	ext, err := ipmatch.LookupExtIface(publicIP, "", "", stack, ipmatch.PublicIPOpts{PublicIP: publicIP})
	if err != nil {
		return fmt.Errorf("no interface holds %s: %w", publicIP, err)
	}
	be, err := backend.NewManager(ctx, sm, ext).GetBackend(config.BackendType)
	if err != nil {
		return err
	}
	// Started as soon as the cluster's API answers, flanneld syncs its node cache (above) while the
	// kubelet registers the Node and a master gives it its pod range. Taking the lease before then
	// fails or waits 3 s between looks, so wait here for the pod range, asking every 200 ms.
	if err := waitForPodCIDR(ctx, client, os.Getenv("NODE_NAME")); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting
		}
		return err
	}
	var wg sync.WaitGroup
	var bn backend.Network
	for attempt := 0; ; attempt++ {
		if bn, err = be.RegisterNetwork(ctx, &wg, config); err == nil {
			break
		}
		// The node cache may lag the API by a moment.
		if attempt == 25 {
			return fmt.Errorf("register network: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	tm := &iptables.IPTablesManager{}
	if err := tm.Init(ctx); err != nil {
		return err
	}
	// Pod traffic crosses this node's FORWARD chain: accept the pod network in both directions.
	tm.SetupAndEnsureForwardRules(ctx, config.Network, config.IPv6Network, resync)
	if err := sm.HandleSubnetFile(subnetFile, config, false, bn.Lease().Subnet, bn.Lease().IPv6Subnet, bn.MTU()); err != nil {
		return fmt.Errorf("write %s: %w", subnetFile, err)
	}
	log.Infof("lease %s on %s (%s backend); wrote %s", bn.Lease().Subnet, publicIP, config.BackendType, subnetFile)
	wg.Add(1)
	go func() { defer wg.Done(); bn.Run(ctx) }()
	if err := sm.CompleteLease(ctx, bn.Lease(), &wg); err != nil {
		log.Errorf("lease: %v", err)
		cancel()
	}
	wg.Wait()
	return nil
}

// waitForNodeList returns once flannel may list Nodes, asking every 100 ms; it says why it waits, once per reason.
func waitForNodeList(ctx context.Context, client kubernetes.Interface) error {
	said := ""
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.CoreV1().Nodes().List(rctx, metav1.ListOptions{Limit: 1})
		cancel()
		if err == nil {
			return nil
		}
		if why := err.Error(); why != said {
			log.Infof("waiting to list nodes: %s", why)
			said = why
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitForPodCIDR returns once the Node has a pod range, reading it every 200 ms; it says why it waits, once per reason.
func waitForPodCIDR(ctx context.Context, client kubernetes.Interface, name string) error {
	said := ""
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		node, err := client.CoreV1().Nodes().Get(rctx, name, metav1.GetOptions{})
		cancel()
		why := "no pod range yet"
		switch {
		case err == nil && node.Spec.PodCIDR != "":
			return nil
		case apierrors.IsNotFound(err):
			why = "not registered yet"
		case err != nil:
			why = err.Error()
		}
		if why != said {
			log.Infof("waiting for node %s: %s", name, why)
			said = why
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
