package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// probeClient is shared by every HTTP probe: connections to a ready process are kept and reused
// (an API server's /readyz over TLS costs a handshake otherwise), certificates are not checked.
var probeClient = &http.Client{
	Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a local readiness probe
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
		Proxy:               nil,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func hostOr(h string) string {
	if h == "" {
		return "127.0.0.1"
	}
	return h
}

// probeOnce runs one check of a probe and says whether it passed.
func probeOnce(p *probe, timeout time.Duration) bool {
	switch {
	case p.File != nil:
		_, err := os.Stat(p.File.Path)
		return err == nil
	case p.Exec != nil:
		if len(p.Exec.Command) == 0 {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return exec.CommandContext(ctx, p.Exec.Command[0], p.Exec.Command[1:]...).Run() == nil
	case p.TCP != nil:
		if p.TCP.Port <= 0 {
			return false
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(hostOr(p.TCP.Host), strconv.Itoa(int(p.TCP.Port))), timeout)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	case p.HTTP != nil:
		if p.HTTP.Port <= 0 {
			return false
		}
		scheme := p.HTTP.Scheme
		if scheme == "" {
			scheme = "http"
		}
		path := p.HTTP.Path
		if path == "" {
			path = "/"
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		url := scheme + "://" + net.JoinHostPort(hostOr(p.HTTP.Host), strconv.Itoa(int(p.HTTP.Port))) + path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		res, err := probeClient.Do(req)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
		_ = res.Body.Close()
		return res.StatusCode < 400 || p.HTTP.AnyStatus
	}
	return false
}
