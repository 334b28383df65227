package cmdutil

import (
	"errors"
	"fmt"
	"io/fs"
)

// OpenError formats the failure to open an image as qemu-img does:
// "Could not open 'FILE': REASON", with qemu-img's wording for a missing
// file ("Could not open 'FILE': No such file or directory").
func OpenError(path string, err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("Could not open '%s': Could not open '%s': No such file or directory", path, path)
	}
	return fmt.Sprintf("Could not open '%s': %v", path, err)
}
