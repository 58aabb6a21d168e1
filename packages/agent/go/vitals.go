package main

import (
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

type diskUse struct {
	Path        string  `json:"path"`
	UsedPercent float64 `json:"usedPercent"`
}

type vitalsReport struct {
	Load [3]float64 `json:"load"`
	CPUs int        `json:"cpus"`
	// Bytes charged to the VM's memory cgroup (or the agent's RSS when there is none).
	MemoryBytes      int64   `json:"memoryBytes"`
	MemoryLimitBytes *int64  `json:"memoryLimitBytes"`
	Disk             diskUse `json:"disk"`
}

func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

func ownRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func vitals(diskPath string) vitalsReport {
	v := vitalsReport{CPUs: runtime.NumCPU(), Disk: diskUse{Path: diskPath}}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		for i := 0; i < 3 && i < len(f); i++ {
			v.Load[i], _ = strconv.ParseFloat(f[i], 64)
		}
	}
	if usage, ok := readInt("/sys/fs/cgroup/memory/memory.usage_in_bytes"); ok {
		v.MemoryBytes = usage
	} else {
		v.MemoryBytes = ownRSS()
	}
	if limit, ok := readInt("/sys/fs/cgroup/memory/memory.limit_in_bytes"); ok && limit < 1<<60 {
		v.MemoryLimitBytes = &limit
	}
	var st syscall.Statfs_t
	if syscall.Statfs(diskPath, &st) == nil && st.Blocks > 0 {
		v.Disk.UsedPercent = math.Round((1-float64(st.Bavail)/float64(st.Blocks))*1000) / 10
	}
	return v
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGILL: "SIGILL",
	syscall.SIGTRAP: "SIGTRAP", syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE",
	syscall.SIGKILL: "SIGKILL", syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2",
	syscall.SIGPIPE: "SIGPIPE", syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM", syscall.SIGCHLD: "SIGCHLD",
	syscall.SIGCONT: "SIGCONT", syscall.SIGSTOP: "SIGSTOP", syscall.SIGTSTP: "SIGTSTP", syscall.SIGTTIN: "SIGTTIN",
	syscall.SIGTTOU: "SIGTTOU", syscall.SIGURG: "SIGURG", syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ",
	syscall.SIGVTALRM: "SIGVTALRM", syscall.SIGPROF: "SIGPROF", syscall.SIGWINCH: "SIGWINCH", syscall.SIGIO: "SIGIO",
	syscall.SIGPWR: "SIGPWR", syscall.SIGSYS: "SIGSYS",
}

// signalName is the signal's name as Node.js and the director spell it (SIGKILL).
func signalName(sig syscall.Signal) string {
	if n, ok := signalNames[sig]; ok {
		return n
	}
	return "SIG" + strconv.Itoa(int(sig))
}
