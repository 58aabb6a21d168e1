package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process states. running: up and ready; starting: up (or waiting for its start condition), readiness not yet
// passed; failing: exited and waiting to be restarted; stopped: not supposed to run.
const (
	stateRunning  = "running"
	stateStarting = "starting"
	stateFailing  = "failing"
	stateStopped  = "stopped"
)

type exitStatus struct {
	Code   *int    `json:"code"`
	Signal *string `json:"signal"`
}

type processStatus struct {
	Job       string      `json:"job"`
	Name      string      `json:"name"`
	State     string      `json:"state"`
	Pid       *int        `json:"pid"`
	Restarts  int         `json:"restarts"`
	LastExit  *exitStatus `json:"lastExit"`
	StartedAt *int64      `json:"startedAt"`
	ReadyAt   *int64      `json:"readyAt"`
}

type supervised struct {
	job      string
	spec     process
	cwd      string
	logFile  string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	state    string
	restarts int
	backoff  time.Duration
	lastExit *exitStatus
	wanted   bool
	// Bumped at every launch and stop: a timer, probe or start-condition check from before then does nothing.
	generation int
	startedAt  *int64
	readyAt    *int64
}

type supervisorOptions struct {
	root               string
	log                *logger
	minBackoff         time.Duration
	maxBackoff         time.Duration
	stableAfter        time.Duration // a process that stayed up this long resets its backoff
	probeInterval      time.Duration // a process not ready yet is probed, a start condition checked, this often
	readyProbeInterval time.Duration // a ready process is probed again this often
	stopGrace          time.Duration
}

// supervisor runs the processes of an instance's jobs and keeps them running: a process that exits is restarted
// with exponential backoff, and its state and restart count are reported.
type supervisor struct {
	o supervisorOptions
	// mu guards everything below; lifecycle runs starts, stops and job restarts one after another (a start that
	// arrives while another is still stopping the old processes must not launch a second set beside the first).
	mu        sync.Mutex
	lifecycle sync.Mutex
	procs     []*supervised
	bundle    *bundle
	bundleSeq int
	changeCh  chan struct{}
}

func newSupervisor(o supervisorOptions) *supervisor {
	return &supervisor{o: o, changeCh: make(chan struct{})}
}

func nowMs() int64 { return time.Now().UnixMilli() }

// changed wakes everyone waiting for a change of state. Called with mu held.
func (s *supervisor) changed() {
	close(s.changeCh)
	s.changeCh = make(chan struct{})
}

// nextChange returns a channel closed at the next change of any process's state.
func (s *supervisor) nextChange() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changeCh
}

func (s *supervisor) jobDir(name string) string { return filepath.Join(s.o.root, "jobs", name) }

// artifactDir is where a job's backup artifacts are written and its restore artifacts read.
func (s *supervisor) artifactDir(name string) string {
	return filepath.Join(s.o.root, "artifacts", name)
}

// apply writes the bundle's files and scripts; its processes start on start(). raw is kept as the saved bundle.
func (s *supervisor) apply(b *bundle, raw []byte) error {
	for _, j := range b.Jobs {
		dir := s.jobDir(j.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range j.Files {
			path := f.Path
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			mode := os.FileMode(f.Mode & 0o7777)
			if err := os.WriteFile(path, []byte(f.Content), mode); err != nil {
				return err
			}
			if err := os.Chmod(path, mode); err != nil {
				return err
			}
		}
		for name, body := range j.Scripts {
			path := filepath.Join(dir, "scripts", name)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, []byte("#!/bin/sh\nset -e\n"+body+"\n"), 0o755); err != nil {
				return err
			}
			if err := os.Chmod(path, 0o755); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(filepath.Join(s.o.root, "logs", j.Name), 0o755); err != nil {
			return err
		}
	}
	if err := writeFileAtomic(filepath.Join(s.o.root, "bundle.json"), raw, 0o600); err != nil {
		return err
	}
	s.mu.Lock()
	s.bundle = b
	s.bundleSeq++
	s.mu.Unlock()
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadSavedBundle reads the bundle applied before a restart of the agent, if any.
func (s *supervisor) loadSavedBundle() bool {
	raw, err := os.ReadFile(filepath.Join(s.o.root, "bundle.json"))
	if err != nil {
		return false
	}
	var b bundle
	if json.Unmarshal(raw, &b) != nil {
		return false
	}
	s.mu.Lock()
	s.bundle = &b
	s.bundleSeq++
	s.mu.Unlock()
	return true
}

func (s *supervisor) current() (*bundle, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundle, s.bundleSeq
}

// start starts every process of the applied bundle, stopping any left from an older one.
func (s *supervisor) start() {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	b, _ := s.current()
	if b == nil {
		return
	}
	s.stopAll(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = nil
	for _, j := range b.Jobs {
		for _, spec := range j.Processes {
			s.procs = append(s.procs, &supervised{
				job:     j.Name,
				spec:    spec,
				cwd:     s.jobDir(j.Name),
				logFile: filepath.Join(s.o.root, "logs", j.Name, spec.Name+".log"),
				state:   stateStopped,
				backoff: s.o.minBackoff,
				wanted:  true,
			})
		}
	}
	for _, p := range s.procs {
		s.launch(p)
	}
}

// launch starts p now, or once its start condition passes. Called with mu held.
func (s *supervisor) launch(p *supervised) {
	if !p.wanted {
		return
	}
	p.generation++
	gen := p.generation
	if p.spec.StartWhen == nil {
		s.spawn(p)
		return
	}
	p.state = stateStarting
	s.changed()
	go func() {
		for {
			ok := probeOnce(p.spec.StartWhen, 2*time.Second)
			s.mu.Lock()
			if !p.wanted || p.generation != gen {
				s.mu.Unlock()
				return
			}
			if ok {
				s.spawn(p)
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			time.Sleep(s.o.probeInterval)
		}
	}()
}

// lookPath finds a command the way a shell given the process's PATH would.
func lookPath(command, path string) string {
	if strings.Contains(command, "/") {
		return command
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		candidate := filepath.Join(dir, command)
		if st, err := os.Stat(candidate); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return candidate
		}
	}
	return command
}

func agentPath() string {
	if p := os.Getenv("PATH"); p != "" {
		return p
	}
	return "/usr/sbin:/usr/bin:/sbin:/bin"
}

// command is a process's command in dir, with an environment of PATH and the process's own variables only (never
// the agent's, which hold its TLS material); the program is looked up on that PATH.
func command(spec process, dir string) *exec.Cmd {
	env := map[string]string{"PATH": agentPath()}
	for k, v := range spec.Env {
		env[k] = v
	}
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	cmd := exec.Command(lookPath(spec.Command, env["PATH"]), spec.Args...)
	cmd.Args[0] = spec.Command
	cmd.Dir = dir
	cmd.Env = list
	return cmd
}

// spawn starts p's command in a session of its own, its output appended to its log. Called with mu held.
func (s *supervisor) spawn(p *supervised) {
	_ = os.MkdirAll(filepath.Dir(p.logFile), 0o755)
	out, err := os.OpenFile(p.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		s.o.log.warn("cannot open the process's log", map[string]any{"job": p.job, "process": p.spec.Name, "err": err.Error()})
	}
	cmd := command(p.spec, p.cwd)
	if out != nil {
		cmd.Stdout = out
		cmd.Stderr = out
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	startedAt := nowMs()
	p.startedAt = &startedAt
	p.readyAt = nil
	if p.spec.Readiness == nil {
		p.readyAt = &startedAt
	}
	gen := p.generation
	exited := make(chan struct{})
	p.exited = exited
	if err := cmd.Start(); err != nil {
		if out != nil {
			_ = out.Close()
		}
		s.o.log.warn("process failed to start", map[string]any{"job": p.job, "process": p.spec.Name, "err": err.Error()})
		p.cmd = nil
		code := 127
		go func() { s.exited(p, gen, startedAt, &exitStatus{Code: &code}); close(exited) }()
		p.state = stateStarting
		s.changed()
		return
	}
	if out != nil {
		_ = out.Close()
	}
	p.cmd = cmd
	if p.spec.Readiness != nil {
		p.state = stateStarting
	} else {
		p.state = stateRunning
	}
	s.changed()
	go func() {
		_ = cmd.Wait()
		s.exited(p, gen, startedAt, exitOf(cmd.ProcessState))
		close(exited)
	}()
	if p.spec.Readiness != nil {
		go s.probe(p, cmd)
	}
}

func exitOf(ps *os.ProcessState) *exitStatus {
	if ps == nil {
		return &exitStatus{}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		name := signalName(ws.Signal())
		return &exitStatus{Signal: &name}
	}
	code := ps.ExitCode()
	return &exitStatus{Code: &code}
}

// exited records the end of p's process and schedules its restart when it is still wanted.
func (s *supervisor) exited(p *supervised, gen int, startedAt int64, status *exitStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.cmd = nil
	p.startedAt = nil
	p.readyAt = nil
	p.lastExit = status
	if !p.wanted {
		p.state = stateStopped
		s.changed()
		return
	}
	if time.Duration(nowMs()-startedAt)*time.Millisecond >= s.o.stableAfter {
		p.backoff = s.o.minBackoff
	}
	p.state = stateFailing
	p.restarts++
	s.changed()
	fields := map[string]any{"job": p.job, "process": p.spec.Name, "restarts": p.restarts, "backoffMs": p.backoff.Milliseconds()}
	if status.Code != nil {
		fields["code"] = *status.Code
	}
	if status.Signal != nil {
		fields["signal"] = *status.Signal
	}
	s.o.log.warn("process exited; restarting", fields)
	delay := p.backoff
	p.backoff = min(p.backoff*2, s.o.maxBackoff)
	time.AfterFunc(delay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if p.generation == gen && p.wanted {
			s.launch(p)
		}
	})
}

// probe checks p's readiness until the process is gone: every probe interval until it passes, then every
// ready-probe interval.
func (s *supervisor) probe(p *supervised, cmd *exec.Cmd) {
	for {
		ok := probeOnce(p.spec.Readiness, 2*time.Second)
		s.mu.Lock()
		if p.cmd != cmd || !p.wanted {
			s.mu.Unlock()
			return
		}
		before := p.state
		if ok {
			p.state = stateRunning
			if p.readyAt == nil {
				t := nowMs()
				p.readyAt = &t
			}
		} else if p.state == stateRunning {
			p.state = stateStarting
		}
		if p.state != before {
			s.changed()
		}
		wait := s.o.probeInterval
		if p.state == stateRunning {
			wait = s.o.readyProbeInterval
		}
		exited := p.exited
		s.mu.Unlock()
		select {
		case <-time.After(wait):
		case <-exited:
			return
		}
	}
}

// stop stops every process: SIGTERM to its process group, SIGKILL after the grace period. Jobs stop one after
// another, the last started first (the API server before the etcd it writes to; the processes of one job
// together). immediate: every process group gets SIGKILL at once (an etcd restore, whose data replaces whatever
// they would have finished).
func (s *supervisor) stop(immediate bool) {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	s.stopAll(immediate)
}

func (s *supervisor) stopAll(immediate bool) {
	s.mu.Lock()
	running := s.procs
	for _, p := range running {
		p.wanted = false
		p.generation++
	}
	s.mu.Unlock()
	if immediate {
		s.stopGroup(running, syscall.SIGKILL)
		return
	}
	var jobs []string
	seen := map[string]bool{}
	for _, p := range running {
		if !seen[p.job] {
			seen[p.job] = true
			jobs = append(jobs, p.job)
		}
	}
	for i := len(jobs) - 1; i >= 0; i-- {
		var group []*supervised
		for _, p := range running {
			if p.job == jobs[i] {
				group = append(group, p)
			}
		}
		s.stopGroup(group, syscall.SIGTERM)
	}
}

func (s *supervisor) stopGroup(procs []*supervised, sig syscall.Signal) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func(p *supervised) {
			defer wg.Done()
			s.stopOne(p, sig)
		}(p)
	}
	wg.Wait()
}

func (s *supervisor) stopOne(p *supervised, sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd == nil || cmd.Process == nil {
		p.state = stateStopped
		s.changed()
		s.mu.Unlock()
		return
	}
	pid := cmd.Process.Pid
	s.mu.Unlock()
	_ = syscall.Kill(-pid, sig)
	select {
	case <-exited:
	case <-time.After(s.o.stopGrace):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
	s.mu.Lock()
	p.state = stateStopped
	s.changed()
	s.mu.Unlock()
}

// restartJob stops the processes of one job (as stop does) and starts them again: what a component needs to
// drop state it cached from the API (after an etcd restore, a kubelet). False when no process is of that job.
func (s *supervisor) restartJob(name string) bool {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	s.mu.Lock()
	var procs []*supervised
	for _, p := range s.procs {
		if p.job == name {
			procs = append(procs, p)
		}
	}
	for _, p := range procs {
		p.wanted = false
		p.generation++
	}
	s.mu.Unlock()
	if len(procs) == 0 {
		return false
	}
	s.stopGroup(procs, syscall.SIGTERM)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range procs {
		p.wanted = true
		p.backoff = s.o.minBackoff
		s.launch(p)
	}
	return true
}

type scriptResult struct {
	Job    string `json:"job"`
	Code   int    `json:"code"`
	Output string `json:"output"`
}

type onceResult struct {
	Job     string `json:"job"`
	Process string `json:"process"`
	Code    int    `json:"code"`
	Output  string `json:"output"`
}

// run runs a command to its end and returns its exit code (128 + signal when killed) and the tail of its output.
func run(cmd *exec.Cmd, timeout time.Duration) (int, string) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 127, err.Error()
	}
	timer := time.AfterFunc(timeout, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	_ = cmd.Wait()
	timedOut := !timer.Stop()
	code := 0
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	} else {
		code = cmd.ProcessState.ExitCode()
	}
	out := stdout.String() + stderr.String()
	if timedOut {
		out += "\n(killed after " + timeout.String() + ")"
	}
	if len(out) > 65536 {
		out = out[len(out)-65536:]
	}
	return code, strings.ToValidUTF8(out, "\uFFFD")
}

// scriptEnv is the agent's environment for lifecycle scripts, without its own TLS material.
func scriptEnv(artifacts string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ANODYNE_AGENT_KEY=") || strings.HasPrefix(kv, "ANODYNE_AGENT_CERT=") || strings.HasPrefix(kv, "ANODYNE_AGENT_CA=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "ANODYNE_ARTIFACT_DIR="+artifacts)
}

// runScript runs a lifecycle script of every job that has it (drain, backup, …), in job order.
func (s *supervisor) runScript(name string, timeout time.Duration) ([]scriptResult, error) {
	b, _ := s.current()
	results := []scriptResult{}
	if b == nil {
		return results, nil
	}
	for _, j := range b.Jobs {
		if _, ok := j.Scripts[name]; !ok {
			continue
		}
		// Backup scripts write their artifacts here, restore scripts read them from here (BBR's artifact directory).
		artifacts := s.artifactDir(j.Name)
		if err := os.MkdirAll(artifacts, 0o700); err != nil {
			return nil, err
		}
		cmd := exec.Command(filepath.Join(s.jobDir(j.Name), "scripts", name))
		cmd.Dir = s.jobDir(j.Name)
		cmd.Env = scriptEnv(artifacts)
		code, out := run(cmd, timeout)
		results = append(results, scriptResult{Job: j.Name, Code: code, Output: out})
	}
	return results, nil
}

// runOnce runs every process of the bundle once, to completion, one after another (an errand); it stops at
// the first that fails.
func (s *supervisor) runOnce(timeout time.Duration) []onceResult {
	b, _ := s.current()
	results := []onceResult{}
	if b == nil {
		return results
	}
	for _, j := range b.Jobs {
		for _, proc := range j.Processes {
			code, out := run(command(proc, s.jobDir(j.Name)), timeout)
			results = append(results, onceResult{Job: j.Name, Process: proc.Name, Code: code, Output: out})
			if code != 0 {
				return results
			}
		}
	}
	return results
}

func (s *supervisor) status() []processStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]processStatus, 0, len(s.procs))
	for _, p := range s.procs {
		st := processStatus{Job: p.job, Name: p.spec.Name, State: p.state, Restarts: p.restarts, LastExit: p.lastExit, StartedAt: p.startedAt, ReadyAt: p.readyAt}
		if p.cmd != nil && p.cmd.Process != nil {
			pid := p.cmd.Process.Pid
			st.Pid = &pid
		}
		out = append(out, st)
	}
	return out
}

// healthy: every process running and ready.
func (s *supervisor) healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.procs) == 0 {
		return false
	}
	for _, p := range s.procs {
		if p.state != stateRunning {
			return false
		}
	}
	return true
}

// logs returns the last bytes of each process's log.
func (s *supervisor) logs(n int64) map[string]string {
	s.mu.Lock()
	procs := append([]*supervised(nil), s.procs...)
	s.mu.Unlock()
	out := map[string]string{}
	for _, p := range procs {
		key := p.job + "/" + p.spec.Name
		out[key] = ""
		f, err := os.Open(p.logFile)
		if err != nil {
			continue
		}
		if st, err := f.Stat(); err == nil && st.Size() > n {
			_, _ = f.Seek(st.Size()-n, 0)
		}
		buf := make([]byte, n)
		k, _ := io.ReadFull(f, buf)
		_ = f.Close()
		out[key] = strings.ToValidUTF8(string(buf[:k]), "\uFFFD")
	}
	return out
}
