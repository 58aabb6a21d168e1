package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"
)

// tlsMaterial is the agent's certificate and key and the CA that signed the director's (PEM).
type tlsMaterial struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
	CA   string `json:"ca"`
}

type agentState struct {
	AgentID    string          `json:"agentId"`
	BundleHash *string         `json:"bundleHash"`
	Healthy    bool            `json:"healthy"`
	Processes  []processStatus `json:"processes"`
	Vitals     vitalsReport    `json:"vitals"`
}

// apiError is an answer with a stable code, the shape of the platform's errors.
type apiError struct {
	status  int
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details"`
}

func (e *apiError) Error() string { return e.Message }

func invalid(format string, a ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, Code: "ANODYNE_E_INVALID_INPUT", Message: fmt.Sprintf(format, a...), Details: map[string]any{}}
}

// agent serves the director over mutually authenticated TLS. It pushes nothing: the director asks GET /state
// (process states and vitals) each health pass (ADR 0008). It keeps no state the director needs beyond the
// last applied bundle, so a director restart needs nothing from it.
type agent struct {
	id     string
	root   string
	tls    tlsMaterial
	sup    *supervisor
	log    *logger
	config atomic.Pointer[tls.Config]
	server *http.Server
}

func (a *agent) state() agentState {
	b, _ := a.sup.current()
	s := agentState{AgentID: a.id, Healthy: a.sup.healthy(), Processes: a.sup.status(), Vitals: vitals("/")}
	if b != nil {
		h := b.Hash
		s.BundleHash = &h
	}
	return s
}

// stateWhenSettled answers at once or, with wait_ms (≤ 60,000), once the state is worth a look: the bundle
// `bundle` (when given) applied and every process ready, or a process exited and waiting to be restarted, or the
// time is up. A director watching an update asks this way instead of polling.
func (a *agent) stateWhenSettled(ctx context.Context, q map[string][]string) (agentState, error) {
	raw, ok := q["wait_ms"]
	if !ok {
		return a.state(), nil
	}
	wait, err := strconv.Atoi(raw[0])
	if err != nil || wait < 0 || wait > 60_000 {
		return agentState{}, invalid("wait_ms is a whole number of milliseconds from 0 to 60000")
	}
	want, byBundle := q["bundle"]
	deadline := time.Now().Add(time.Duration(wait) * time.Millisecond)
	for {
		change := a.sup.nextChange()
		s := a.state()
		settled := s.Healthy && (!byBundle || (s.BundleHash != nil && *s.BundleHash == want[0]))
		for _, p := range s.Processes {
			if p.State == stateFailing {
				settled = true
			}
		}
		left := time.Until(deadline)
		if settled || left <= 0 {
			return s, nil
		}
		timer := time.NewTimer(left)
		select {
		case <-change:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return s, nil
		}
		timer.Stop()
	}
}

func readBody(r *http.Request) ([]byte, error) {
	const limit = 8 << 20
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, invalid("cannot read the request body: %v", err)
	}
	if len(b) > limit {
		return nil, invalid("request body too large")
	}
	return b, nil
}

// readJSON reads an object from the body ({} when empty).
func readJSON(r *http.Request) (map[string]any, []byte, error) {
	b, err := readBody(r)
	if err != nil {
		return nil, nil, err
	}
	if len(b) == 0 {
		return map[string]any{}, b, nil
	}
	var v any
	if json.Unmarshal(b, &v) != nil {
		return nil, nil, invalid("request body is not JSON")
	}
	m, _ := v.(map[string]any)
	return m, b, nil
}

var scriptNames = map[string]bool{"drain": true, "pre_start": true, "post_start": true, "backup": true, "restore": true}

func (a *agent) route(w http.ResponseWriter, r *http.Request) (any, error) {
	path := r.URL.Path
	switch r.Method + " " + path {
	case "GET /state":
		return a.stateWhenSettled(r.Context(), r.URL.Query())
	case "POST /apply":
		m, raw, err := readJSON(r)
		if err != nil {
			return nil, err
		}
		jobs, okJobs := m["jobs"].([]any)
		_, okHash := m["hash"].(string)
		if m == nil || jobs == nil && !okJobs || !okHash {
			return nil, invalid("apply needs a bundle with jobs and hash")
		}
		var b bundle
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, invalid("the bundle is not well formed: %v", err)
		}
		if err := a.sup.apply(&b, raw); err != nil {
			return nil, err
		}
		return a.state(), nil
	case "POST /start":
		_, _ = a.sup.runScript("pre_start", 600*time.Second)
		a.sup.start()
		a.postStartWhenHealthy()
		return a.state(), nil
	case "POST /run_errand":
		return map[string]any{"results": a.sup.runOnce(time.Hour)}, nil
	case "POST /stop":
		m, _, err := readJSON(r)
		if err != nil {
			return nil, err
		}
		immediate, present := m["immediate"]
		flag, isBool := immediate.(bool)
		if present && !isBool {
			return nil, invalid("immediate is true or false")
		}
		a.sup.stop(flag)
		return a.state(), nil
	case "POST /drain":
		return a.script("drain")
	case "POST /run_script":
		m, _, err := readJSON(r)
		if err != nil {
			return nil, err
		}
		name, _ := m["name"].(string)
		if !scriptNames[name] {
			return nil, invalid("unknown script")
		}
		return a.script(name)
	case "POST /restart_job":
		m, _, err := readJSON(r)
		if err != nil {
			return nil, err
		}
		name, ok := m["job"].(string)
		if !ok || !a.sup.restartJob(name) {
			return nil, invalid("restart_job needs a job this instance runs")
		}
		return a.state(), nil
	case "PUT /tls":
		m, _, err := readJSON(r)
		if err != nil {
			return nil, err
		}
		cert, ok1 := m["cert"].(string)
		key, ok2 := m["key"].(string)
		ca, ok3 := m["ca"].(string)
		if !ok1 || !ok2 || !ok3 {
			return nil, invalid("renewing TLS needs cert, key and ca (PEM)")
		}
		if err := a.renewTLS(tlsMaterial{Cert: cert, Key: key, CA: ca}); err != nil {
			return nil, err
		}
		return map[string]any{"renewed": true}, nil
	case "GET /logs":
		return map[string]any{"logs": a.sup.logs(16384)}, nil
	}
	return nil, &apiError{status: http.StatusNotFound, Code: "ANODYNE_E_NOT_FOUND", Message: "no route " + r.Method + " " + path, Details: map[string]any{}}
}

// script runs a lifecycle script of every job that has it and answers their results.
func (a *agent) script(name string) (any, error) {
	results, err := a.sup.runScript(name, 600*time.Second)
	if err != nil {
		return nil, err
	}
	return map[string]any{"results": results}, nil
}

func send(w http.ResponseWriter, status int, body any) {
	b, _ := json.Marshal(body)
	w.Header().Set("content-type", "application/json")
	w.Header().Set("content-length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func sendError(w http.ResponseWriter, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = &apiError{status: http.StatusInternalServerError, Code: "ANODYNE_E_INTERNAL", Message: err.Error(), Details: map[string]any{}}
	}
	send(w, e.status, e)
}

func (a *agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Path) >= len("/artifacts") && r.URL.Path[:len("/artifacts")] == "/artifacts" {
		if err := a.artifacts(w, r); err != nil {
			sendError(w, err)
		}
		return
	}
	body, err := a.route(w, r)
	if err != nil {
		sendError(w, err)
		return
	}
	send(w, http.StatusOK, body)
}

var artifactPath = regexp.MustCompile(`^/artifacts/([a-z0-9][a-z0-9_-]{0,62})/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$`)

// artifacts streams backup artifacts: GET /artifacts/<job>/<file> reads what a backup script wrote, PUT places
// what a restore script reads, DELETE /artifacts removes them all.
func (a *agent) artifacts(w http.ResponseWriter, r *http.Request) error {
	if r.URL.Path == "/artifacts" && r.Method == http.MethodDelete {
		if err := os.RemoveAll(filepath.Join(a.root, "artifacts")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	m := artifactPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		return invalid("an artifact is /artifacts/<job>/<file>")
	}
	dir := a.sup.artifactDir(m[1])
	path := filepath.Join(dir, m[2])
	switch r.Method {
	case http.MethodGet:
		f, err := os.Open(path)
		if err != nil {
			return &apiError{status: http.StatusNotFound, Code: "ANODYNE_E_NOT_FOUND", Message: "no artifact " + m[1] + "/" + m[2], Details: map[string]any{}}
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		w.Header().Set("content-type", "application/octet-stream")
		w.Header().Set("content-length", strconv.FormatInt(st.Size(), 10))
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, f)
		return nil
	case http.MethodPut:
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		tmp := path + ".partial"
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(tmp)
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return invalid("%s is not a method of artifacts", r.Method)
}

// postStartWhenHealthy runs the jobs' post-start scripts once every process is running (BOSH's post-start).
func (a *agent) postStartWhenHealthy() {
	b, seq := a.sup.current()
	if b == nil {
		return
	}
	has := false
	for _, j := range b.Jobs {
		if _, ok := j.Scripts["post_start"]; ok {
			has = true
		}
	}
	if !has {
		return
	}
	go func() {
		deadline := time.Now().Add(600 * time.Second)
		for {
			if _, now := a.sup.current(); now != seq || time.Now().After(deadline) {
				return
			}
			if a.sup.healthy() {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		results, err := a.sup.runScript("post_start", 600*time.Second)
		if err != nil {
			a.log.warn("post-start failed", map[string]any{"err": err.Error()})
			return
		}
		codes := make([]map[string]any, 0, len(results))
		for _, r := range results {
			codes = append(codes, map[string]any{"job": r.Job, "code": r.Code})
		}
		a.log.info("post-start ran", map[string]any{"results": codes})
	}()
}

// serverConfig checks TLS material and makes the server's configuration of it: the agent's certificate, and
// clients must present a certificate signed by the CA.
func serverConfig(t tlsMaterial) (*tls.Config, error) {
	pair, err := tls.X509KeyPair([]byte(t.Cert), []byte(t.Key))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(t.CA)) {
		return nil, errors.New("the CA is not a PEM certificate")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

func (a *agent) tlsFile() string { return filepath.Join(a.root, "tls.json") }

// renewTLS takes renewed TLS material from the director (its certificate about to expire): checked, used for
// every new connection at once, and kept under the agent's root so that a restart uses it too.
func (a *agent) renewTLS(t tlsMaterial) error {
	cfg, err := serverConfig(t)
	if err != nil {
		return invalid("the TLS material is not usable: %v", err)
	}
	b, _ := json.Marshal(t)
	if err := writeFileAtomic(a.tlsFile(), b, 0o600); err != nil {
		return err
	}
	a.config.Store(cfg)
	a.log.info("TLS certificate renewed", nil)
	return nil
}

// currentTLS is the material to serve with: what the director last renewed, else what the VM was created with.
func (a *agent) currentTLS() (*tls.Config, error) {
	if b, err := os.ReadFile(a.tlsFile()); err == nil {
		var saved tlsMaterial
		if json.Unmarshal(b, &saved) == nil {
			if cfg, err := serverConfig(saved); err == nil {
				return cfg, nil
			}
		}
	}
	return serverConfig(a.tls)
}

// listen resumes the last applied bundle and starts serving; it returns the port it listens on.
func (a *agent) listen(addr string) (int, error) {
	if a.sup.loadSavedBundle() {
		a.sup.start()
	}
	cfg, err := a.currentTLS()
	if err != nil {
		return 0, fmt.Errorf("the TLS material is not usable: %w", err)
	}
	a.config.Store(cfg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return 0, err
	}
	outer := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return a.config.Load(), nil },
	}
	a.server = &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	go func() { _ = a.server.Serve(tls.NewListener(ln, outer)) }()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// close stops the processes (gracefully) and the server.
func (a *agent) close() {
	a.sup.stop(false)
	if a.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = a.server.Shutdown(ctx)
	}
}
