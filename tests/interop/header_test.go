package interop

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHeaderRefusalsMatchQemu crafts images whose header stock QEMU
// refuses (a header extension crossing the backing file name or the end of
// the header cluster, a bad snapshot table offset or count) and compares
// with qemu-img: info and check refuse each with exit status 1, and
// zqimg's message holds QEMU's words ("Header extension too large",
// "Snapshot table offset invalid", ...), in the same place: the open
// error of info (and of check, for an extension), the "ERROR ..." line of
// check for the snapshot table.
func TestHeaderRefusalsMatchQemu(t *testing.T) {
	requireQemu(t)
	be := binary.BigEndian
	tests := []struct {
		name  string
		patch func(b []byte)
	}{
		{"extension crossing the cluster end", func(b []byte) { be.PutUint32(b[0x74:], 0x10000-0x78+1) }},
		{"extension crossing the backing name", func(b []byte) {
			be.PutUint64(b[8:], 0x200)
			be.PutUint32(b[16:], 4)
			copy(b[0x200:], "back")
		}},
		{"extension header crossing the backing name", func(b []byte) {
			be.PutUint64(b[8:], 0x74)
			be.PutUint32(b[16:], 4)
			copy(b[0x74:], "back")
		}},
		{"snapshot offset unaligned", func(b []byte) {
			be.PutUint32(b[60:], 1)
			be.PutUint64(b[64:], 0x30200)
		}},
		{"snapshot offset unaligned without snapshots", func(b []byte) { be.PutUint64(b[64:], 0x1234) }},
		{"snapshot table wrapping 2^64", func(b []byte) {
			be.PutUint32(b[60:], 1)
			be.PutUint64(b[64:], 0xffffffffffff0000)
		}},
		{"too many snapshots", func(b []byte) { be.PutUint32(b[60:], 65537) }},
	}
	openRE := regexp.MustCompile(`Could not open '[^']*': (.*)`)
	errorRE := regexp.MustCompile(`(?m)^qemu-img: (ERROR .*)$`)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "bad.qcow2")
			mustRun(t, "", zqimgBin, "create", "-q", "-f", "qcow2", p, "64M")
			b := readFile(t, p)
			if be.Uint32(b[0x70:]) != 0x6803f857 || be.Uint32(b[0x74:]) != 432 {
				t.Fatalf("zqimg create no longer puts a feature name table of 432 bytes at 0x70")
			}
			tc.patch(b)
			writeFile(t, p, b)

			qi := runQemu(t, "", "qemu-img", "info", p)
			zi := zq(t, "", "info", p)
			m := openRE.FindStringSubmatch(qi.stderr)
			if qi.code != 1 || m == nil {
				t.Fatalf("qemu-img info does not refuse the image:\n%s", qi)
			}
			if zi.code != 1 || !strings.Contains(zi.stderr, "Could not open '"+p+"': qcow2: "+m[1]) {
				t.Errorf("zqimg info does not refuse it with QEMU's %q:\n%s", m[1], zi)
			}

			qc := runQemu(t, "", "qemu-img", "check", p)
			zc := zq(t, "", "check", p)
			if qc.code != 1 || zc.code != 1 {
				t.Errorf("check exit status: qemu-img %d, zqimg %d; want 1\n%s\n%s", qc.code, zc.code, qc, zc)
			}
			switch {
			case openRE.MatchString(qc.stderr):
				want := openRE.FindStringSubmatch(qc.stderr)[1]
				if !strings.Contains(zc.stderr, "Could not open '"+p+"': qcow2: "+want) {
					t.Errorf("zqimg check does not refuse the image with QEMU's %q:\n%s", want, zc)
				}
			case errorRE.MatchString(qc.stderr):
				want := errorRE.FindStringSubmatch(qc.stderr)[1]
				// An error message, as qemu-img's: after the program's name.
				if !regexp.MustCompile(`(?m)^zqimg: ` + regexp.QuoteMeta(want)).MatchString(zc.stderr) {
					t.Errorf("zqimg check does not report QEMU's %q:\n%s", want, zc)
				}
			default:
				t.Fatalf("unexpected qemu-img check output:\n%s", qc)
			}
			if after := readFile(t, p); string(after) != string(b) {
				t.Errorf("a refused image was changed")
			}
			_ = os.Remove(p)
		})
	}
}
