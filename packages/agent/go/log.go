package main

import (
	"encoding/json"
	"os"
	"sync"
	"time"
)

// logger writes one JSON object per line to stdout, the shape the platform's own logs have
// (level, time, name, msg, then the fields). Nothing secret is ever passed to it.
type logger struct {
	name string
	mu   sync.Mutex
}

func newLogger(name string) *logger { return &logger{name: name} }

func (l *logger) write(level, msg string, fields map[string]any) {
	rec := map[string]any{}
	for k, v := range fields {
		rec[k] = v
	}
	rec["level"] = level
	rec["time"] = time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	rec["name"] = l.name
	rec["msg"] = msg
	line, err := json.Marshal(rec)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = os.Stdout.Write(append(line, '\n'))
}

func (l *logger) info(msg string, fields map[string]any)  { l.write("info", msg, fields) }
func (l *logger) warn(msg string, fields map[string]any)  { l.write("warn", msg, fields) }
func (l *logger) error(msg string, fields map[string]any) { l.write("error", msg, fields) }
