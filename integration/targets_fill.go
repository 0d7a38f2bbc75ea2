package integration

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
)

// fillChunk is the unit of work of the random filler: small enough that the generated
// bytes are still in the CPU cache when write copies them into the page cache.
const fillChunk = 256 << 10

// createBacking creates a backing file of size bytes: sparse for "zero" (and ""), random
// data for "random".
func createBacking(path string, size int64, fill string) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	switch fill {
	case "", "zero":
		return f.Truncate(size)
	case "random":
		return fillRandom(f, size)
	}
	return fmt.Errorf("unknown fill %q", fill)
}

// fillRandom writes size random bytes into f: a ChaCha8 stream per worker, each worker
// seeded from crypto/rand, writing whole chunks at their offsets. Generating 1 GiB takes about
// 0.5 s of CPU; the page cache makes the rest (about 1 s on an idle 2-core VM).
func fillRandom(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	chunks := (size + fillChunk - 1) / fillChunk
	workers := min(int64(runtime.NumCPU()), 4, chunks)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for w := range workers {
		var seed [32]byte
		if _, err := crand.Read(seed[:]); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := rand.NewChaCha8(seed)
			buf := make([]byte, fillChunk)
			for c := w; c < chunks; c += workers {
				off := c * fillChunk
				n := min(int64(fillChunk), size-off)
				_, _ = src.Read(buf[:n]) // never fails
				if _, err := f.WriteAt(buf[:n], off); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
