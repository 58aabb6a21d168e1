// The Anodyne agent inside each VM: a mutual-TLS HTTPS API for the director (apply, start, stop, restart a
// job, drain, scripts, state, logs, artifacts) and a supervisor that keeps the instance's processes running.
// Written in Go with the standard library only, so that each VM pays a few MiB for it (docs/adr/0027).
// Configuration comes from the environment the provider passes at VM creation.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func need(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fmt.Fprintf(os.Stderr, "anodyne-agent: %s is not set\n", name)
		os.Exit(2)
	}
	return v
}

// millis reads an optional duration in milliseconds from the environment (tests shorten the supervisor's timings).
func millis(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "anodyne-agent: %s is a whole number of milliseconds\n", name)
		os.Exit(2)
	}
	return time.Duration(n) * time.Millisecond
}

func main() {
	log := newLogger("agent")
	listen := need("ANODYNE_AGENT_LISTEN")
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "anodyne-agent: ANODYNE_AGENT_LISTEN is host:port (%v)\n", err)
		os.Exit(2)
	}
	root := os.Getenv("ANODYNE_AGENT_ROOT")
	if root == "" {
		root = "/var/lib/anodyne/agent"
	}
	sup := newSupervisor(supervisorOptions{
		root:               root,
		log:                log,
		minBackoff:         millis("ANODYNE_AGENT_MIN_BACKOFF_MS", 200*time.Millisecond),
		maxBackoff:         10 * time.Second,
		stableAfter:        10 * time.Second,
		probeInterval:      millis("ANODYNE_AGENT_PROBE_INTERVAL_MS", 200*time.Millisecond),
		readyProbeInterval: millis("ANODYNE_AGENT_READY_PROBE_INTERVAL_MS", 10*time.Second),
		stopGrace:          millis("ANODYNE_AGENT_STOP_GRACE_MS", 10*time.Second),
	})
	a := &agent{
		id:   need("ANODYNE_AGENT_ID"),
		root: root,
		tls:  tlsMaterial{Cert: need("ANODYNE_AGENT_CERT"), Key: need("ANODYNE_AGENT_KEY"), CA: need("ANODYNE_AGENT_CA")},
		sup:  sup,
		log:  log,
	}
	bound, err := a.listen(net.JoinHostPort(host, port))
	if err != nil {
		log.error("cannot listen", map[string]any{"err": err.Error()})
		os.Exit(1)
	}
	log.info("agent listening", map[string]any{"port": bound})
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	a.close()
	os.Exit(0)
}
