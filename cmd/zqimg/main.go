// Command zqimg creates, inspects, checks and drives qcow2 images that
// emulate host-managed zoned block devices, in the style of qemu-img and
// qemu-io.
package main

import (
	"os"

	"github.com/zqimg/zqimg/internal/cmd/root"
)

func main() {
	os.Exit(root.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
