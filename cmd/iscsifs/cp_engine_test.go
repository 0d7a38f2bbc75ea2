package main

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestEngineOrder: chunks finish out of order but inOrder sees them in
// order, at bs-aligned boundaries, covering the range exactly.
func TestEngineOrder(t *testing.T) {
	src := make([]byte, 1<<20+777)
	for i := range src {
		src[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		off, end, bs int64
		parallel     int
	}{{0, int64(len(src)), 4096, 8}, {1000, int64(len(src)), 64 << 10, 3}, {5, 9, 4096, 4}, {0, 4096, 4096, 1}} {
		var out []byte
		next := tc.off
		e := &engine{bs: tc.bs, parallel: tc.parallel,
			read: func(_ context.Context, p []byte, off int64) error {
				time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
				copy(p, src[off:])
				return nil
			},
			inOrder: func(p []byte, off int64) error {
				if off != next {
					t.Errorf("chunk at %d, want %d", off, next)
				}
				if end := off + int64(len(p)); end != tc.end && end%tc.bs != 0 {
					t.Errorf("chunk [%d,%d) does not end at a multiple of %d", off, end, tc.bs)
				}
				next = off + int64(len(p))
				out = append(out, p...)
				return nil
			}}
		reached, err := e.run(context.Background(), nil, tc.off, tc.end)
		if err != nil || reached != tc.end || !bytes.Equal(out, src[tc.off:tc.end]) {
			t.Errorf("%+v: reached %d, err %v, %d bytes equal %v", tc, reached, err, len(out), bytes.Equal(out, src[tc.off:tc.end]))
		}
	}
}

// TestEngineError: the prefix before the failed chunk is reported, nothing
// after it.
func TestEngineError(t *testing.T) {
	boom := errors.New("boom")
	var handed atomic.Int64
	e := &engine{bs: 100, parallel: 4,
		read: func(_ context.Context, p []byte, off int64) error {
			if off == 700 {
				return boom
			}
			return nil
		},
		inOrder: func(p []byte, off int64) error { handed.Add(int64(len(p))); return nil }}
	reached, err := e.run(context.Background(), nil, 0, 10_000)
	if !errors.Is(err, boom) || reached != 700 || handed.Load() != 700 {
		t.Errorf("reached %d, handed %d, err %v; want 700, 700, boom", reached, handed.Load(), err)
	}
}

// TestEngineStop: after stop no chunk starts; those in flight complete and
// count.
func TestEngineStop(t *testing.T) {
	stop := make(chan struct{})
	var started atomic.Int64
	e := &engine{bs: 10, parallel: 2,
		read: func(ctx context.Context, p []byte, off int64) error {
			if started.Add(1) == 5 {
				close(stop)
			}
			time.Sleep(time.Millisecond)
			return ctx.Err()
		}}
	reached, err := e.run(context.Background(), stop, 0, 1<<30)
	if err != nil || reached == 0 || reached%10 != 0 || reached > 10*(5+2*2) {
		t.Errorf("reached %d, err %v after a stop at the 5th chunk", reached, err)
	}
}

// TestEngineStream: a stream shorter than the range ends the job early.
func TestEngineStream(t *testing.T) {
	data := make([]byte, 2500)
	for i := range data {
		data[i] = byte(i)
	}
	got := make([]byte, 0, len(data))
	e := &engine{bs: 1000, parallel: 3, stream: bytes.NewReader(data),
		inOrder: func(p []byte, _ int64) error { got = append(got, p...); return nil }}
	reached, err := e.run(context.Background(), nil, 0, 1<<20)
	if err != nil || reached != 2500 || !e.eof || !bytes.Equal(got, data) {
		t.Errorf("reached %d, eof %v, err %v, equal %v", reached, e.eof, err, bytes.Equal(got, data))
	}
}

// TestSparseWriter: the file reads back what was written, all-zero grains
// past the old data are holes, and old data under zero grains is gone.
func TestSparseWriter(t *testing.T) {
	const size = 1 << 20
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := bytes.Repeat([]byte{0xee}, 256<<10) // data the copy must overwrite
	if _, err := f.Write(old); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < size; off += 512 {
		if rng.IntN(8) == 0 { // about 1 in 8 sectors holds data
			for i := off; i < off+512; i++ {
				want[i] = byte(rng.IntN(255) + 1)
			}
		}
	}
	w := &sparseWriter{f: f, name: path, dataBelow: int64(len(old))}
	for off := 0; off < size; off += 100_000 { // pieces not aligned to grains
		end := min(off+100_000, size)
		if err := w.writeAt(want[off:end], int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, equal %v, err %v", len(got), bytes.Equal(got, want), err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= size {
		t.Errorf("%d bytes allocated for a %d-byte file that is mostly zeros", st.Blocks*512, size)
	}
}

// pieceRecorder records the writes it is given.
type pieceRecorder struct {
	data   []byte
	pieces []int
}

func (r *pieceRecorder) WriteAt(p []byte, off int64) (int, error) {
	if need := int(off) + len(p); need > len(r.data) {
		r.data = append(r.data, make([]byte, need-len(r.data))...)
	}
	copy(r.data[off:], p)
	r.pieces = append(r.pieces, len(p))
	return len(p), nil
}

// TestWriteFileAt: a write reaches the file whole and in order, in pieces
// of at most maxFileWrite.
func TestWriteFileAt(t *testing.T) {
	for _, n := range []int{0, 1, maxFileWrite - 1, maxFileWrite, maxFileWrite + 1, 4<<20 + 100} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*31 + 7)
		}
		r := &pieceRecorder{}
		if err := writeFileAt(r, p, 512); err != nil {
			t.Fatal(err)
		}
		if n > 0 && !bytes.Equal(r.data[512:], p) {
			t.Errorf("%d bytes: the file holds other data", n)
		}
		wantPieces := (n + maxFileWrite - 1) / maxFileWrite
		if len(r.pieces) != wantPieces {
			t.Errorf("%d bytes: %d writes, want %d", n, len(r.pieces), wantPieces)
		}
		for _, piece := range r.pieces {
			if piece > maxFileWrite || piece > 512<<10 { // 1 MiB writes measured 6 × slower
				t.Errorf("%d bytes: a write of %d, more than %d", n, piece, min(maxFileWrite, 512<<10))
			}
		}
	}
}

func TestGrainEnd(t *testing.T) {
	for _, tc := range []struct {
		base     int64
		i, n     int
		wantNext int
	}{{0, 0, 10000, 4096}, {100, 0, 10000, 3996}, {100, 3996, 10000, 8092}, {4096, 0, 100, 100}} {
		if got := grainEnd(tc.base, tc.i, tc.n); got != tc.wantNext {
			t.Errorf("grainEnd(%d, %d, %d) = %d, want %d", tc.base, tc.i, tc.n, got, tc.wantNext)
		}
	}
}

func TestAutoBlockSize(t *testing.T) {
	for _, tc := range []struct {
		maxTransfer int
		want        int64
	}{
		{256 << 10, 256 << 10}, // tgt: MaxBurstLength 262144
		{512 << 10, 512 << 10},
		{1 << 20, 1 << 20},
		{16 << 20, 1 << 20},   // a target that takes 16 MiB commands
		{64 << 10, 256 << 10}, // four commands per request
		{192 << 10, 384 << 10},
		{4096, 256 << 10},
		{512, 256 << 10},
	} {
		if got := autoBlockSize(tc.maxTransfer); got != tc.want {
			t.Errorf("autoBlockSize(%d) = %d, want %d", tc.maxTransfer, got, tc.want)
		}
	}
}
