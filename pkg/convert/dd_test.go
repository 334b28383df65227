package convert

import "testing"

// TestDDSizes: qemu-img dd's arithmetic. count caps the input at count
// blocks from its start; skip moves the start; a skip past that end leaves
// an empty output.
func TestDDSizes(t *testing.T) {
	for _, c := range []struct {
		size           int64
		r              DDRequest
		outSize, inPos int64
		beyond         bool
	}{
		{1 << 20, DDRequest{BlockSize: 512}, 1 << 20, 0, false},
		{1 << 20, DDRequest{BlockSize: 5}, 1 << 20, 0, false},
		{1 << 20, DDRequest{BlockSize: 4096, Skip: 3}, 1<<20 - 3*4096, 3 * 4096, false},
		{1 << 20, DDRequest{BlockSize: 4096, Skip: 3, Count: 40, HasCount: true}, 37 * 4096, 3 * 4096, false},
		{1 << 20, DDRequest{BlockSize: 4096, Count: 1000, HasCount: true}, 1 << 20, 0, false},
		{1 << 20, DDRequest{BlockSize: 4096, Count: 0, HasCount: true}, 0, 0, false},
		{1 << 20, DDRequest{BlockSize: 1 << 20, Skip: 2}, 0, 1 << 20, true},
		{1 << 20, DDRequest{BlockSize: 1 << 30, Skip: 1 << 40}, 0, 1 << 20, true},
	} {
		out, in, beyond := DDSizes(c.size, c.r)
		if out != c.outSize || in != c.inPos || beyond != c.beyond {
			t.Errorf("size %d, %+v: got (%d, %d, %v), want (%d, %d, %v)", c.size, c.r, out, in, beyond, c.outSize, c.inPos, c.beyond)
		}
	}
}
