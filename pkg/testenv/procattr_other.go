//go:build !linux

package testenv

import "syscall"

// sysProcAttr: without a parent-death signal, a server stays in our process
// group so that at least a Ctrl-C aimed at `go test` reaches it too.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
