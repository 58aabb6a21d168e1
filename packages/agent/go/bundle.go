package main

import (
	"encoding/json"
	"strconv"
	"strings"
)

// The bundle the director renders for one instance (packages/agent/src/bundle.ts has the same shape in TypeScript).
type bundle struct {
	Deployment string `json:"deployment"`
	Group      string `json:"group"`
	Index      int    `json:"index"`
	Jobs       []job  `json:"jobs"`
	Hash       string `json:"hash"`
}

type job struct {
	Name      string            `json:"name"`
	Release   string            `json:"release"`
	Processes []process         `json:"processes"`
	Files     []file            `json:"files"`
	Scripts   map[string]string `json:"scripts"`
}

type file struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	Mode    uint32 `json:"mode"`
}

type process struct {
	Name      string            `json:"name"`
	Command   string            `json:"command"`
	Args      []string          `json:"args"`
	Env       map[string]string `json:"env"`
	Readiness *probe            `json:"readiness,omitempty"`
	// Started only once this probe passes (checked every probe interval, and again before every restart).
	StartWhen *probe `json:"startWhen,omitempty"`
}

// port is a number or a string of digits (the director renders ports either way). Anything else is kept as
// no port (-1): the bundle is still applied, and a probe of it never passes (a process of a bad manifest fails
// its canary as it would with a port nothing listens on).
type port int

func (p *port) UnmarshalJSON(b []byte) error {
	*p = -1
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var text string
	switch x := v.(type) {
	case float64:
		text = strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		text = strings.TrimSpace(x)
	default:
		return nil
	}
	if n, err := strconv.Atoi(text); err == nil && n > 0 && n < 65536 {
		*p = port(n)
	}
	return nil
}

type probe struct {
	HTTP *struct {
		Port   port   `json:"port"`
		Path   string `json:"path"`
		Scheme string `json:"scheme"`
		Host   string `json:"host"`
		// AnyStatus: any HTTP answer passes (the server is up, whatever it lets an anonymous caller see).
		AnyStatus bool `json:"anyStatus"`
	} `json:"http,omitempty"`
	TCP *struct {
		Port port   `json:"port"`
		Host string `json:"host"`
	} `json:"tcp,omitempty"`
	Exec *struct {
		Command []string `json:"command"`
	} `json:"exec,omitempty"`
	// Ready once the file exists: checked by the agent itself, no process spawned per probe.
	File *struct {
		Path string `json:"path"`
	} `json:"file,omitempty"`
}
