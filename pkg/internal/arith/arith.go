// Package arith holds the integer helpers the qcow2 engine (pkg/image) and
// the checker (pkg/check) share. Every function is defined for the whole
// uint64 range: none computes an intermediate value that can wrap around.
package arith

import "math/bits"

// CeilDiv returns a/b rounded up (b > 0). It never computes a+b-1, which
// wraps around for a near 2^64.
func CeilDiv(a, b uint64) uint64 {
	if a == 0 {
		return 0
	}
	return (a-1)/b + 1
}

// RoundUp returns a rounded up to a multiple of b (b > 0). The result must
// be representable: it is 0 when the multiple is 2^64 or more.
func RoundUp(a, b uint64) uint64 { return CeilDiv(a, b) * b }

// Log2 returns the base-2 logarithm of v, a power of two (-1 for 0).
func Log2(v uint64) int { return bits.Len64(v) - 1 }

// Overlaps reports whether the byte ranges [a, a+alen) and [b, b+blen)
// share a byte. An empty range overlaps nothing. Ranges that extend past
// 2^64 are compared as if the address space did not end, so a corrupt
// offset near the top cannot make a range look like it wraps to 0.
func Overlaps(a, alen, b, blen uint64) bool {
	if alen == 0 || blen == 0 {
		return false
	}
	if a >= b {
		return a-b < blen
	}
	return b-a < alen
}
