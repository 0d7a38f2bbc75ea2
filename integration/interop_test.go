package integration

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/iscsifs/iscsifs/initiator"
)

// allocated returns the bytes a file really occupies on disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestDigests runs a 64 MiB round trip with CRC32C header and data digests
// on a tgt target that requires them.
func TestDigests(t *testing.T) {
	const iqn = "iqn.2026-11.lab:digest"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 64 << 20, Fill: "random"}},
		Keys: map[string]string{"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}})
	tests := []struct {
		name         string
		header, data initiator.DigestPolicy
	}{
		{"crc32c", initiator.DigestCRC32C, initiator.DigestCRC32C},
		{"prefer-crc32c", initiator.DigestPreferCRC32C, initiator.DigestPreferCRC32C},
		// tgt accepts None as well: header digests only, then data only.
		{"header only", initiator.DigestCRC32C, initiator.DigestNone},
		{"data only", initiator.DigestNone, initiator.DigestCRC32C},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Negotiation = initiator.DefaultNegotiationConfig()
			cfg.Negotiation.HeaderDigest, cfg.Negotiation.DataDigest = tt.header, tt.data
			s := login(t, tg, iqn, cfg)
			p := s.Params()
			if p.HeaderDigest != (tt.header != initiator.DigestNone) || p.DataDigest != (tt.data != initiator.DigestNone) {
				t.Fatalf("digests in use: header %v data %v", p.HeaderDigest, p.DataDigest)
			}
			ctx := ctxFor(t, 2*time.Minute)
			l, err := s.OpenLUN(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, l.Size())
			rand.Read(data)
			if _, err := l.WriteAtContext(ctx, data, 0); err != nil {
				t.Fatal(err)
			}
			if err := l.SyncContext(ctx); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(data))
			if _, err := l.ReadAtContext(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			backing, _ := os.ReadFile(tg.BackingFile(iqn, 1))
			if !bytes.Equal(got, data) || !bytes.Equal(backing, data) {
				t.Fatal("64 MiB round trip with digests differs")
			}
		})
	}
}

// TestDiscard punches a hole in a thin-provisioned tgt LUN: the backing
// file's allocation shrinks, the range reads zeros and GET LBA STATUS
// reports it deallocated.
func TestDiscard(t *testing.T) {
	tg := StartTGT(t, TargetSpec{Name: labPlain, LUNs: []LUNSpec{
		{LUN: 1, Size: 32 << 20, Fill: "random", Thin: true},
		{LUN: 2, Size: 8 << 20, Fill: "random"},
	}})
	s := login(t, tg, labPlain, testConfig(t))
	ctx := ctxFor(t, time.Minute)
	l, err := s.OpenLUN(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !l.CanUnmap() {
		t.Fatalf("thin LUN: no UNMAP/WRITE SAME support reported (%+v)", l.Provisioning)
	}
	backing := tg.BackingFile(labPlain, 1)
	before := allocated(t, backing)
	const off, length = 4<<20 + 100, 16 << 20 // unaligned start: the partial block is zeroed
	if err := l.Discard(ctx, off, length); err != nil {
		t.Fatal(err)
	}
	after := allocated(t, backing)
	if before-after < 15<<20 {
		t.Errorf("backing file allocation %d -> %d: want it to shrink by ~16 MiB", before, after)
	}
	got := make([]byte, length)
	if _, err := l.ReadAtContext(ctx, got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, length)) {
		t.Error("discarded range does not read back as zeros")
	}
	file, _ := os.ReadFile(backing)
	if !bytes.Equal(file[off:off+length], make([]byte, length)) {
		t.Error("discarded range is not zero in the backing file")
	}
	if file[off-1] == 0 && file[off-2] == 0 && file[off-3] == 0 {
		t.Error("bytes before the discarded range were cleared")
	}
	exts, err := l.LBAStatus(ctx, 8<<20)
	if err != nil {
		t.Fatalf("GET LBA STATUS: %v", err)
	}
	if exts[0].Mapped || exts[0].Off != 8<<20 {
		t.Errorf("LBA status at 8 MiB: %+v, want deallocated", exts[0])
	}

	// A LUN without thin provisioning: WRITE SAME writes zeros or the
	// discard is refused with ErrDiscardNotSupported; never wrong data.
	l2, err := s.OpenLUN(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	err = l2.Discard(ctx, 1<<20, 1<<20)
	if err != nil && !errors.Is(err, initiator.ErrDiscardNotSupported) {
		t.Fatalf("discard on a thick LUN: %v", err)
	}
	if err == nil {
		file2, _ := os.ReadFile(tg.BackingFile(labPlain, 2))
		if !bytes.Equal(file2[1<<20:2<<20], make([]byte, 1<<20)) {
			t.Error("discard on a thick LUN reported success but left data")
		}
	}
	if _, err := l2.LBAStatus(ctx, 0); !errors.Is(err, initiator.ErrNoLBAStatus) {
		t.Errorf("LBA status on a thick LUN: %v, want ErrNoLBAStatus", err)
	}
}
