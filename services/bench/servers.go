package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of CPU times in /proc/<pid>/stat (100 on every mainstream
// architecture; the bench reports ratios and µs per job, so a wrong value would only scale them).
const clockTicks = 100

// servers are the local stack's server processes (the emulator and Postgres), read from the pid files
// infra/stack.sh writes to PUBQ_RUN_DIR. Their CPU per job is part of what a mode costs the machine:
// on a shared machine a mode that costs the servers more leaves less for everyone.
type servers struct{ emulator, postgres int }

func findServers() servers {
	dir := os.Getenv("PUBQ_RUN_DIR")
	read := func(name string) int {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return 0
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	if dir == "" {
		return servers{}
	}
	return servers{emulator: read("emulator.pid"), postgres: read("pg.pid")}
}

// treeCPU is the CPU time of pid and its descendants, live and exited (reaped children's times are in
// their parent's cutime and cstime). Zero where /proc cannot tell.
func treeCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	type proc struct{ ppid, ticks int64 }
	procs := map[int64]proc{}
	var rootReaped int64
	for _, e := range entries {
		id, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name is in parentheses and may hold spaces: fields start after the last ')'.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 15 {
			continue
		}
		num := func(i int) int64 { n, _ := strconv.ParseInt(f[i], 10, 64); return n }
		// f[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
		procs[id] = proc{ppid: num(1), ticks: num(11) + num(12)}
		if id == int64(pid) {
			rootReaped = num(13) + num(14)
		}
	}
	inTree := func(id int64) bool {
		for n := 0; id > 1 && n < 64; n++ {
			if id == int64(pid) {
				return true
			}
			id = procs[id].ppid
		}
		return false
	}
	total := rootReaped
	for id, p := range procs {
		if inTree(id) {
			total += p.ticks
		}
	}
	return time.Duration(total) * time.Second / clockTicks
}
