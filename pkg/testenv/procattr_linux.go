package testenv

import "syscall"

// sysProcAttr puts a server in its own process group (a Ctrl-C aimed at `go
// test` reaches it only through Main) and has the kernel kill it if this
// process dies first, e.g. on a test timeout.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
