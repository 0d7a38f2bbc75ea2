package initiator

import (
	"bytes"
	"context"
	"testing"
)

// TestDurableWrites: data written and then synced survives a power loss of
// a target with a volatile write cache, whichever way it went: WRITE with
// FUA and no SYNCHRONIZE CACHE when the target offers FUA (DPOFUA) and
// nothing else awaits a flush, else plain WRITEs and SYNCHRONIZE CACHE.
func TestDurableWrites(t *testing.T) {
	type step struct {
		op  byte // 'w' WriteAtContext, 'd' WriteDurableAtContext, 's' SyncContext
		off int64
		n   int
	}
	w := func(off int64, n int) step { return step{'w', off, n} }
	d := func(off int64, n int) step { return step{'d', off, n} }
	sync := step{op: 's'}
	for _, tc := range []struct {
		name      string
		dpofua    bool
		wce       int32 // fakeTarget.modeWCE
		refuseFUA bool
		steps     []step
		fua       int // WRITEs with FUA the target carries out
		syncs     int // SYNCHRONIZE CACHE commands
	}{
		{"fua", true, 2, false, []step{d(8192, 4096), sync}, 1, 0},
		{"fua unaligned", true, 2, false, []step{d(777, 1000), sync}, 1, 0},
		{"fua three fsyncs", true, 2, false, []step{d(0, 4096), sync, d(4096, 512), sync, d(65536, 8192), sync}, 3, 0},
		{"plain write first", true, 2, false, []step{w(0, 4096), d(8192, 4096), sync}, 0, 1},
		{"plain write synced first", true, 2, false, []step{w(0, 4096), sync, d(8192, 4096), sync}, 1, 1},
		{"plain write after", true, 2, false, []step{d(8192, 4096), w(0, 4096), sync}, 1, 1},
		{"no dpofua", false, 2, false, []step{d(8192, 4096), sync, d(0, 512), sync}, 0, 2},
		{"write cache off", true, 1, false, []step{d(8192, 4096), sync}, 0, 0},
		{"no mode sense", true, 0, false, []step{d(8192, 4096), sync}, 0, 1},
		{"fua refused", true, 2, true, []step{d(8192, 4096), sync, d(0, 4096), sync}, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			ft := newFakeTarget(t, 1<<20)
			ft.modeWCE.Store(tc.wce)
			ft.modeDPOFUA.Store(tc.dpofua)
			ft.refuseFUA.Store(tc.refuseFUA)
			_, l := fakeSession(t, ft, hostileConfig(t, nil))
			ft.volatileCache()
			ctx := context.Background()
			model := make([]byte, l.Size())
			if _, err := l.ReadAtContext(ctx, model, 0); err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				var err error
				switch st.op {
				case 's':
					err = l.SyncContext(ctx)
				default:
					p := bytes.Repeat([]byte{byte(i + 1)}, st.n)
					if st.op == 'w' {
						_, err = l.WriteAtContext(ctx, p, st.off)
					} else {
						_, err = l.WriteDurableAtContext(ctx, p, st.off)
					}
					copy(model[st.off:], p)
				}
				if err != nil {
					t.Fatalf("step %d (%c): %v", i, st.op, err)
				}
			}
			checkPowerLoss(t, ft, l.ReadAtContext, model, tc.fua, tc.syncs)
			st := l.s.Stats()
			if int(st.FUAWrites) != tc.fua || int(st.SyncsSent) != tc.syncs {
				t.Errorf("Stats: FUAWrites %d, SyncsSent %d; want %d and %d", st.FUAWrites, st.SyncsSent, tc.fua, tc.syncs)
			}
		})
	}
}

// checkPowerLoss checks the FUA writes and SYNCHRONIZE CACHE commands ft
// received, then cuts its power and checks that reading gives model.
func checkPowerLoss(t *testing.T, ft *fakeTarget, read func(context.Context, []byte, int64) (int, error), model []byte, wantFUA, wantSyncs int) {
	t.Helper()
	ft.mu.Lock()
	fua, syncs := ft.fuaIO, ft.cdbOps[0x35]+ft.cdbOps[0x91]
	ft.mu.Unlock()
	if fua != wantFUA || syncs != wantSyncs {
		t.Errorf("%d WRITEs with FUA and %d SYNCHRONIZE CACHE, want %d and %d", fua, syncs, wantFUA, wantSyncs)
	}
	ft.powerLoss()
	got := make([]byte, len(model))
	if _, err := read(context.Background(), got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Errorf("after a power loss the LU lacks synced data (first difference at %d)", firstDiff(got, model))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestMultipathDurableWrites: the LU's write cache is one, whichever path a
// write took: a sync covers the writes of every path, skips when nothing
// was written since the last one, and a small fsync's WRITE carries FUA
// when no path has writes awaiting a flush. Data synced survives a power
// loss.
func TestMultipathDurableWrites(t *testing.T) {
	type step struct {
		op  byte // 'w' WriteAtContext, 'd' WriteDurableAtContext, 's' SyncContext
		off int64
	}
	for _, tc := range []struct {
		name   string
		dpofua bool
		steps  []step
		fua    int
		syncs  int
	}{
		{"fua", true, []step{{'d', 8192}, {'s', 0}}, 1, 0},
		{"plain write on the other path first", true, []step{{'w', 0}, {'d', 8192}, {'s', 0}}, 0, 1},
		{"writes on both paths", true, []step{{'w', 0}, {'w', 4096}, {'s', 0}, {'d', 8192}, {'s', 0}}, 1, 1},
		{"nothing written", true, []step{{'s', 0}, {'s', 0}}, 0, 0},
		{"second sync", false, []step{{'w', 0}, {'s', 0}, {'s', 0}}, 0, 1},
		{"no dpofua", false, []step{{'d', 8192}, {'s', 0}}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			ft, p1, p2 := twoPortalTarget(t, 1<<20, "")
			ft.modeWCE.Store(2)
			ft.modeDPOFUA.Store(tc.dpofua)
			ctx := context.Background()
			m, err := OpenMultipath(ctx, "iqn.2026-11.test:fake", []string{p1, p2}, 0, fakeConfig(t), SelectRoundRobin)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ft.volatileCache()
			model := make([]byte, m.Size())
			if _, err := m.ReadAtContext(ctx, model, 0); err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				p := bytes.Repeat([]byte{byte(i + 1)}, 4096)
				switch st.op {
				case 's':
					err = m.SyncContext(ctx)
				case 'w':
					_, err = m.WriteAtContext(ctx, p, st.off)
				default:
					_, err = m.WriteDurableAtContext(ctx, p, st.off)
				}
				if st.op != 's' {
					copy(model[st.off:], p)
				}
				if err != nil {
					t.Fatalf("step %d (%c): %v", i, st.op, err)
				}
			}
			checkPowerLoss(t, ft, m.ReadAtContext, model, tc.fua, tc.syncs)
		})
	}
}
