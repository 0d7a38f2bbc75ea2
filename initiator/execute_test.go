package initiator

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/iscsifs/iscsifs/initiator/scsi"
)

// TestExecute: raw commands with data-in, data-out and none; a failed one
// carries its sense data; bad arguments are refused before anything is
// sent.
func TestExecute(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	_, l := fakeSession(t, ft, fakeConfig(t))
	ctx := context.Background()

	inq := make([]byte, 36)
	if n, err := l.Execute(ctx, []byte{0x12, 0, 0, 0, 36, 0}, inq, nil); err != nil || n != 36 || string(inq[8:12]) != "FAKE" {
		t.Fatalf("INQUIRY: %d, %v, % x", n, err, inq[:16])
	}
	// PERSISTENT RESERVE IN, READ KEYS, allocation length 256: the fake
	// returns the 8-byte header only.
	cdb := []byte{0x5e, 0x00, 0, 0, 0, 0, 0, 0x01, 0x00, 0}
	keys := make([]byte, 256)
	if n, err := l.Execute(ctx, cdb, keys, nil); err != nil || n != 8 {
		t.Fatalf("PERSISTENT RESERVE IN: %d, %v", n, err)
	}

	// WRITE(10) of one block at LBA 2, then Sync: SYNCHRONIZE CACHE goes out.
	data := bytes.Repeat([]byte{0xc3}, 512)
	wr := []byte{0x2a, 0, 0, 0, 0, 2, 0, 0, 1, 0}
	if n, err := l.Execute(ctx, wr, nil, data); err != nil || n != 0 {
		t.Fatalf("WRITE(10): %d, %v", n, err)
	}
	ft.mu.Lock()
	written := bytes.Equal(ft.disk[1024:1536], data)
	ft.mu.Unlock()
	if !written {
		t.Error("WRITE(10) through Execute did not reach the disk")
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	ft.mu.Lock()
	syncs := ft.cdbOps[0x35]
	ft.mu.Unlock()
	if syncs != 1 {
		t.Errorf("%d SYNCHRONIZE CACHE after a write through Execute, want 1", syncs)
	}

	// An opcode the target does not know.
	_, err := l.Execute(ctx, []byte{0xc0, 0, 0, 0, 0, 0}, nil, nil)
	var se *scsi.StatusError
	if !errors.As(err, &se) || se.Sense == nil || se.Sense.Key != scsi.SenseIllegalRequest || se.Sense.ASC != 0x20 {
		t.Fatalf("unknown opcode: %v, want ILLEGAL REQUEST 20/00 in a *scsi.StatusError", err)
	}
	if !errors.Is(err, scsi.ErrInvalidOpcode) {
		t.Errorf("%v is not scsi.ErrInvalidOpcode", err)
	}
	var ce *CommandError
	if !errors.As(err, &ce) || ce.LUN != 0 {
		t.Errorf("%v is not a *CommandError for LUN 0", err)
	}

	before := ft.scsiN.Load()
	for _, bad := range []struct {
		name         string
		cdb, in, out []byte
	}{
		{"empty CDB", nil, nil, nil},
		{"5-byte CDB", make([]byte, 5), nil, nil},
		{"261-byte CDB", make([]byte, 261), nil, nil},
		{"both directions", []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}, make([]byte, 512), make([]byte, 512)},
	} {
		if _, err := l.Execute(ctx, bad.cdb, bad.in, bad.out); err == nil {
			t.Errorf("%s: no error", bad.name)
		}
	}
	if n := ft.scsiN.Load() - before; n != 0 {
		t.Errorf("%d commands sent for refused arguments", n)
	}
}
