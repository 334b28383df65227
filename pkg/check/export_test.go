package check

// SetMaxExtend changes how far a repair may extend a file, for tests on
// in-memory files; it returns a function restoring the previous value.
func SetMaxExtend(n uint64) (restore func()) {
	old := maxExtend
	maxExtend = n
	return func() { maxExtend = old }
}
