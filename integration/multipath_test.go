package integration

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMountMultipath: `mount --multipath` with two portals of tgtd. fio
// runs 30 s of 4 KiB random reads and writes with verification on the
// mounted LUN; after 12 s each path has carried at least a quarter of the
// commands, then the first portal is deleted and the connections dropped.
// fio's verification passes, and status shows path 1 failed, path 2 up.
func TestMountMultipath(t *testing.T) {
	fioBin := Tool(t, "fio")
	const iqn = "iqn.2026-12.lab:mpmount"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 64 << 20}}})
	first, second := tg.Portal, addPortal(t, tg)
	// A URL without a LUN would give the target a session per LUN and path.
	r := runCLI(t, nil, "mount", "--multipath", "--portal", second, "iscsi://"+first+"/"+iqn, t.TempDir())
	if r.code == 0 || !strings.Contains(r.stderr, "names a target and a LUN") {
		t.Errorf("--multipath without a LUN: exit %d, stderr %q", r.code, r.stderr)
	}
	metricsAddr := freeAddr(t)
	m := startMount(t, iscsifsBinary(t), "iscsi://"+first+"/"+iqn+"/1",
		"--multipath", "--portal", second, "--cache-size", "8MiB", "--write-through", "--replacement-timeout", "60s",
		"--metrics-addr", metricsAddr)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fio := exec.CommandContext(ctx, fioBin, "--name=mp", "--filename="+m.path("lun1"),
		"--rw=randrw", "--bs=4k", "--direct=1", "--ioengine=psync", "--numjobs=4", "--size=16m",
		"--offset_increment=16m", "--time_based", "--runtime=30", "--verify=crc32c",
		"--verify_backlog=256", "--verify_fatal=1", "--group_reporting")
	fio.Dir = t.TempDir() // fio leaves its verify state files there
	var out strings.Builder
	fio.Stdout, fio.Stderr = &out, &out
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fio.Wait() }()

	select {
	case err := <-done:
		t.Fatalf("fio ended early: %v\n%s", err, out.String())
	case <-time.After(12 * time.Second):
	}
	st := m.status(t)
	if len(st.Targets) != 1 || len(st.Targets[0].Paths) != 2 {
		t.Fatalf("status: %+v", st.Targets)
	}
	paths := st.Targets[0].Paths
	total := paths[0].Commands + paths[1].Commands
	for _, p := range paths {
		if p.State != "active" || total == 0 || p.Commands*4 < total {
			t.Errorf("path %s: %s, %d of %d commands (want a quarter at least)", p.Portal, p.State, p.Commands, total)
		}
	}
	t.Logf("commands per path after 12 s: %d and %d", paths[0].Commands, paths[1].Commands)

	dropPortal(t, tg, iqn, first)
	if err := <-done; err != nil {
		t.Fatalf("fio after the first path went: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "verify") && strings.Contains(out.String(), "bad") {
		t.Fatalf("fio reports a verification failure:\n%s", out.String())
	}
	got := m.status(t).Targets[0].Paths
	if got[0].State != "failed" || got[1].State != "active" {
		t.Errorf("paths after the first portal went: %+v", got)
	}
	for portal, want := range map[string]float64{first: 0, second: 1} {
		if got := scrapeMetricLabels(t, metricsAddr, "iscsifs_path_active", fmt.Sprintf("portal=%q,target=%q", portal, iqn)); got != want {
			t.Errorf("iscsifs_path_active for %s = %v, want %v", portal, got, want)
		}
	}
	if got[1].Commands <= paths[1].Commands {
		t.Errorf("path 2 carried no commands after path 1 went: %d then %d", paths[1].Commands, got[1].Commands)
	}
	m.term(t)
}
