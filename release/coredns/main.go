// Command coredns is the cluster DNS server of Anodyne's release: upstream CoreDNS built with
// only the plugins a cluster needs. There is deliberately no forward/proxy plugin, so queries
// for names outside the cluster are answered by CoreDNS itself (NXDOMAIN/SERVFAIL) and never
// leave the machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
	_ "github.com/coredns/coredns/plugin/hosts"
)

// The plugin chain order (CoreDNS runs plugins in this order, not in Corefile order).
var directives = []string{
	"metrics", "health", "ready", "reload", "errors", "log", "loadbalance", "cache",
	"loop", "hosts", "kubernetes", "template", "whoami",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
