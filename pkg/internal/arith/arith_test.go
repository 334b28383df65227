package arith

import (
	"math"
	"math/big"
	"testing"
)

func TestCeilDiv(t *testing.T) {
	for _, tc := range []struct{ a, b, want uint64 }{
		{0, 1, 0}, {0, 512, 0}, {1, 512, 1}, {512, 512, 1}, {513, 512, 2},
		{math.MaxUint64, 1, math.MaxUint64},
		{math.MaxUint64, 2, 1 << 63},
		{math.MaxUint64, 1 << 16, 1 << 48}, // a+b-1 wraps around here
		{math.MaxUint64 - 1<<15, 1 << 16, 1 << 48},
	} {
		if got := CeilDiv(tc.a, tc.b); got != tc.want {
			t.Errorf("CeilDiv(%#x, %#x) = %#x, want %#x", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestRoundUp(t *testing.T) {
	for _, tc := range []struct{ a, b, want uint64 }{
		{0, 8, 0}, {1, 8, 8}, {8, 8, 8}, {9, 8, 16},
		{math.MaxUint64 - 1<<16 + 1, 1 << 16, math.MaxUint64 - 1<<16 + 1},
	} {
		if got := RoundUp(tc.a, tc.b); got != tc.want {
			t.Errorf("RoundUp(%#x, %#x) = %#x, want %#x", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestLog2(t *testing.T) {
	for i := 0; i < 64; i++ {
		if got := Log2(1 << i); got != i {
			t.Errorf("Log2(1<<%d) = %d", i, got)
		}
	}
}

// overlapsBig is Overlaps computed without any bound on the ends.
func overlapsBig(a, alen, b, blen uint64) bool {
	if alen == 0 || blen == 0 {
		return false
	}
	ba, bb := new(big.Int).SetUint64(a), new(big.Int).SetUint64(b)
	ea := new(big.Int).Add(ba, new(big.Int).SetUint64(alen))
	eb := new(big.Int).Add(bb, new(big.Int).SetUint64(blen))
	return ba.Cmp(eb) < 0 && bb.Cmp(ea) < 0
}

func TestOverlaps(t *testing.T) {
	vals := []uint64{0, 1, 511, 512, 513, 1 << 16, 1<<16 + 1, 1 << 62, math.MaxUint64 - 1<<16, math.MaxUint64 - 1, math.MaxUint64}
	for _, a := range vals {
		for _, alen := range vals {
			for _, b := range vals {
				for _, blen := range vals {
					if got, want := Overlaps(a, alen, b, blen), overlapsBig(a, alen, b, blen); got != want {
						t.Fatalf("Overlaps(%#x, %#x, %#x, %#x) = %v, want %v", a, alen, b, blen, got, want)
					}
				}
			}
		}
	}
	// The naive test (a < b+blen && b < a+alen) wraps around here.
	if !Overlaps(math.MaxUint64-1<<16+1, 1<<16, math.MaxUint64-512+1, 512) {
		t.Error("two ranges ending at 2^64 do not overlap")
	}
	if Overlaps(0, 1<<16, math.MaxUint64-1<<15, 1<<16) {
		t.Error("a range wrapping past 2^64 overlaps the first cluster")
	}
}
