//go:build !linux

package pidns

// RunIfInit does nothing off Linux: there are no PID namespaces.
func RunIfInit() {}
