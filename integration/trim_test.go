package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMountTrimSeekStatus covers what issue 6 adds to a mount, on tgt:
// fallocate --punch-hole maps to UNMAP on a thin LUN (the backing file's
// allocation shrinks, the range reads zeros), lseek SEEK_DATA/SEEK_HOLE
// answer from GET LBA STATUS, `iscsifs status` prints the session, and
// --metrics-addr serves Prometheus metrics whose counters move with I/O.
func TestMountTrimSeekStatus(t *testing.T) {
	RequireFUSE(t)
	RequireTools(t, "fallocate")
	tg := StartTGT(t, TargetSpec{Name: labPlain, LUNs: []LUNSpec{
		{LUN: 1, Size: 32 << 20, Fill: "random", Thin: true},
		{LUN: 2, Size: 8 << 20, Fill: "random"},
	}})
	metricsAddr := freeAddr(t)
	bin := iscsifsBinary(t)
	m := startMount(t, bin, "iscsi://"+tg.Portal+"/"+labPlain, "--metrics-addr", metricsAddr)
	lun1, lun2 := m.path("lun1"), m.path("lun2")
	backing := tg.BackingFile(labPlain, 1)

	t.Run("punch hole", func(t *testing.T) {
		before := allocated(t, backing)
		out, err := exec.Command("fallocate", "--punch-hole", "--keep-size", "--offset", "4MiB", "--length", "8MiB", lun1).CombinedOutput()
		if err != nil {
			t.Fatalf("fallocate: %v %s", err, out)
		}
		if after := allocated(t, backing); before-after < 7<<20 {
			t.Errorf("backing allocation %d -> %d, want ~8 MiB less", before, after)
		}
		got := mntReadFileAt(t, lun1, 8<<20, 4<<20)
		if !bytes.Equal(got, make([]byte, 8<<20)) {
			t.Error("punched range does not read back as zeros through the mount")
		}
		file, _ := os.ReadFile(backing)
		if !bytes.Equal(file[4<<20:12<<20], make([]byte, 8<<20)) || bytes.Equal(file[12<<20:12<<20+4096], make([]byte, 4096)) {
			t.Error("backing file: punched range not zero, or data after it lost")
		}
	})

	t.Run("seek data and hole", func(t *testing.T) {
		f, err := os.Open(lun1)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tests := []struct {
			off, whence int
			want        int64
		}{
			{0, unix.SEEK_HOLE, 4 << 20},
			{0, unix.SEEK_DATA, 0},
			{5 << 20, unix.SEEK_DATA, 12 << 20},
			{13 << 20, unix.SEEK_HOLE, 32 << 20},
		}
		for _, tt := range tests {
			got, err := unix.Seek(int(f.Fd()), int64(tt.off), tt.whence)
			if err != nil || got != tt.want {
				t.Errorf("lseek(%d, whence %d) = %d, %v; want %d", tt.off, tt.whence, got, err, tt.want)
			}
		}
		// A thick LUN has no allocation map: all data, the hole at the end.
		g, err := os.Open(lun2)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if got, err := unix.Seek(int(g.Fd()), 4096, unix.SEEK_HOLE); err != nil || got != 8<<20 {
			t.Errorf("thick LUN SEEK_HOLE = %d, %v; want %d", got, err, 8<<20)
		}
	})

	t.Run("punch hole on a thick LUN", func(t *testing.T) {
		out, err := exec.Command("fallocate", "--punch-hole", "--keep-size", "--offset", "1MiB", "--length", "1MiB", lun2).CombinedOutput()
		file, _ := os.ReadFile(tg.BackingFile(labPlain, 2))
		switch {
		case err == nil:
			// WRITE SAME wrote zeros.
			if !bytes.Equal(file[1<<20:2<<20], make([]byte, 1<<20)) {
				t.Error("punch hole succeeded but left data")
			}
		case strings.Contains(string(out), "not supported"):
		default:
			t.Errorf("fallocate on a thick LUN: %v %s", err, out)
		}
	})

	t.Run("status and metrics", func(t *testing.T) {
		before := scrapeMetric(t, metricsAddr, "iscsifs_read_bytes_total", labPlain)
		mntReadFileAt(t, lun2, 4<<20, 0)
		after := scrapeMetric(t, metricsAddr, "iscsifs_read_bytes_total", labPlain)
		if after-before < 4<<20 {
			t.Errorf("iscsifs_read_bytes_total moved %v -> %v after reading 4 MiB", before, after)
		}
		if up := scrapeMetric(t, metricsAddr, "iscsifs_session_up", labPlain); up != 1 {
			t.Errorf("iscsifs_session_up = %v", up)
		}
		r := runCLI(t, nil, "status", m.dir)
		for _, want := range []string{labPlain + " at " + tg.Portal + ": logged-in", "lun1: LUN 1, 32.0 MiB", "cache: "} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("iscsifs status lacks %q:\n%s%s", want, r.stdout, r.stderr)
			}
		}
		if r := runCLI(t, nil, "status", t.TempDir()); r.code == 0 || !strings.Contains(r.stderr, "not an iscsifs mount") {
			t.Errorf("status of a plain directory: exit %d %s", r.code, r.stderr)
		}
	})
}

// freeAddr returns a loopback address with a free port.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrapeMetric returns the value of a metric line with the target label.
func scrapeMetric(t *testing.T, addr, name, target string) float64 {
	t.Helper()
	return scrapeMetricLabels(t, addr, name, fmt.Sprintf("target=%q", target))
}

// scrapeMetricLabels reads one sample of a metric whose labels are, in
// their exposition order, labels (e.g. `portal="a",target="b"`).
func scrapeMetricLabels(t *testing.T, addr, name, labels string) float64 {
	t.Helper()
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	prefix := name + "{" + labels + "}"
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", prefix)
	return 0
}
