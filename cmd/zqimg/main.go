// Command zqimg creates, inspects, checks and drives qcow2 images that
// emulate host-managed zoned block devices, in the style of qemu-img and
// qemu-io.
package main

import (
	"os"
	"path/filepath"

	"github.com/zqimg/zqimg/internal/cmd/root"
)

func main() {
	// Run as qemu-img or qemu-io (a link of that name), zqimg behaves as
	// that program.
	os.Exit(root.MainAs(filepath.Base(os.Args[0]), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
