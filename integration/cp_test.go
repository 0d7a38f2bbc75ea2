package integration

// Tests of `iscsifs cp` against tgtd: data is checked against the LUNs'
// backing files.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	cpIQN  = "iqn.2026-11.test:cp"
	cpRO   = "iqn.2026-11.test:cp-ro"
	cpNull = "iqn.2026-11.test:cp-null"

	cpSize = 16 << 20
)

// startCPTarget starts tgtd with LUN 1 (random data), LUN 2 (zeros, the
// copy's destination), LUN 3 (sparse, data written by the test), a
// read-only LUN and a null LUN.
func startCPTarget(t *testing.T) *Target {
	t.Helper()
	return StartTGT(t,
		TargetSpec{Name: cpIQN, LUNs: []LUNSpec{
			{LUN: 1, Size: cpSize, Fill: "random"},
			{LUN: 2, Size: cpSize},
			{LUN: 3, Size: cpSize},
			{LUN: 4, Size: cpSize, Thin: true},
		}},
		TargetSpec{Name: cpRO, LUNs: []LUNSpec{{LUN: 1, Size: 4 << 20, Fill: "random", ReadOnly: true}}},
		TargetSpec{Name: cpNull, LUNs: []LUNSpec{{LUN: 1, BSType: "null"}}},
	)
}

// runCLIStdin runs the binary with stdin and returns stdout as bytes.
func runCLIStdin(t *testing.T, stdin io.Reader, args ...string) (stdout []byte, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, iscsifsBinary(t), args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running iscsifs %v: %v", args, err)
	}
	if strings.Contains(errb.String(), "goroutine ") || strings.Contains(errb.String(), "panic:") {
		t.Errorf("iscsifs %v printed a stack trace:\n%s", args, errb.String())
	}
	return out.Bytes(), errb.String(), code
}

func fileSum(t *testing.T, path string, off, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// oneLineError checks a failed run: non-zero exit, one line on stderr
// containing want.
func oneLineError(t *testing.T, stderr string, code int, want string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit 0, want an error containing %q", want)
	}
	if lines := strings.Count(strings.TrimRight(stderr, "\n"), "\n") + 1; lines != 1 || !strings.Contains(stderr, want) {
		t.Errorf("want one line containing %q, got %d lines:\n%s", want, lines, stderr)
	}
}

func TestCP(t *testing.T) {
	tg := startCPTarget(t)
	src, dst, holes := tg.URL(cpIQN, 1), tg.URL(cpIQN, 2), tg.URL(cpIQN, 3)
	srcBacking := tg.BackingFile(cpIQN, 1)
	want := mustRead(t, srcBacking)

	t.Run("round trip", func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(dir, "img")
		_, stderr, code := runCLIStdin(t, nil, "cp", "--verify", "--parallel", "8", "--block-size", "256KiB", src, img)
		if code != 0 {
			t.Fatalf("LUN → file: exit %d: %s", code, stderr)
		}
		if !strings.Contains(stderr, "match") {
			t.Errorf("--verify printed no confirmation: %q", stderr)
		}
		if got := mustRead(t, img); !bytes.Equal(got, want) {
			t.Fatalf("image differs from the LUN's backing file (%d vs %d bytes)", len(got), len(want))
		}
		_, stderr, code = runCLIStdin(t, nil, "cp", "--verify", img, dst)
		if code != 0 {
			t.Fatalf("file → LUN: exit %d: %s", code, stderr)
		}
		if a, b := fileSum(t, srcBacking, 0, cpSize), fileSum(t, tg.BackingFile(cpIQN, 2), 0, cpSize); a != b {
			t.Fatalf("second LUN's backing file sha256 %x, first LUN's %x", b, a)
		}
	})

	t.Run("stdout and stdin", func(t *testing.T) {
		out, stderr, code := runCLIStdin(t, nil, "cp", src, "-")
		if code != 0 || !bytes.Equal(out, want) {
			t.Fatalf("cp LUN -: exit %d, %d bytes, equal %v: %s", code, len(out), bytes.Equal(out, want), stderr)
		}
		data := make([]byte, 3<<20+512) // not a multiple of the block size of cp
		fillRand(data, 1)
		_, stderr, code = runCLIStdin(t, bytes.NewReader(data), "cp", "--verify", "--offset", "1MiB", "-", dst)
		if code != 0 {
			t.Fatalf("cp - LUN: exit %d: %s", code, stderr)
		}
		got := mustRead(t, tg.BackingFile(cpIQN, 2))
		if !bytes.Equal(got[1<<20:1<<20+len(data)], data) {
			t.Fatal("stdin did not land at --offset 1MiB")
		}
		// A stream larger than the LUN stops at its end with an error.
		big := bytes.NewReader(make([]byte, cpSize+4096))
		_, stderr, code = runCLIStdin(t, big, "cp", "-", dst)
		oneLineError(t, stderr, code, "holds more than")
	})

	t.Run("sparse", func(t *testing.T) {
		// LUN 3 is a sparse file; put data at a few places.
		backing := tg.BackingFile(cpIQN, 3)
		f, err := os.OpenFile(backing, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 1<<20)
		fillRand(data, 2)
		for _, off := range []int64{0, 5 << 20, 9<<20 + 4096, cpSize - 8192} {
			if _, err := f.WriteAt(data[:min(int64(len(data)), cpSize-off)], off); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		lunData := mustRead(t, backing)

		dir := t.TempDir()
		out := filepath.Join(dir, "sparse.img")
		_, stderr, code := runCLIStdin(t, nil, "cp", "--verify", holes, out)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if got := mustRead(t, out); !bytes.Equal(got, lunData) {
			t.Fatal("sparse image differs from the LUN")
		}
		if a := allocated(t, out); a >= cpSize/2 {
			t.Errorf("sparse image of %d bytes with about 3 MiB of data has %d bytes allocated", cpSize, a)
		}
		du, err := exec.Command("du", "-k", out).Output()
		if err != nil {
			t.Fatal(err)
		}
		if kb, _ := strconv.Atoi(strings.Fields(string(du))[0]); int64(kb)*1024 >= cpSize {
			t.Errorf("du says %d KiB for a %d-byte sparse file", kb, cpSize)
		}

		// --sparse=false writes every block.
		full := filepath.Join(dir, "full.img")
		if _, stderr, code := runCLIStdin(t, nil, "cp", "--sparse=false", holes, full); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if a := allocated(t, full); a < cpSize {
			t.Errorf("--sparse=false image has only %d of %d bytes allocated", a, cpSize)
		}

		// Copying a zero range over existing data punches holes: the old
		// bytes must not survive.
		if _, stderr, code := runCLIStdin(t, nil, "cp", "--offset", "1MiB", "--length", "4MiB", holes, full); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if got := mustRead(t, full); !bytes.Equal(got, lunData) {
			t.Fatal("range copy over an existing file changed it")
		}
		stale := filepath.Join(dir, "stale.img")
		junk := make([]byte, cpSize)
		fillRand(junk, 3)
		if err := os.WriteFile(stale, junk, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, stderr, code := runCLIStdin(t, nil, "cp", "--offset", "1MiB", "--length", "4MiB", holes, stale); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		got := mustRead(t, stale)
		if !bytes.Equal(got[1<<20:5<<20], lunData[1<<20:5<<20]) {
			t.Error("zero range copied over old data left old bytes")
		}
		if !bytes.Equal(got[:1<<20], junk[:1<<20]) || !bytes.Equal(got[5<<20:], junk[5<<20:]) {
			t.Error("range copy changed bytes outside the range")
		}

		// A whole-LUN copy onto an existing file, larger or smaller than the
		// LUN, leaves exactly the LUN: no old byte under its zeros or past
		// its end, and holes where it has zeros.
		for _, size := range []int64{cpSize + 1<<20, 2 << 20} {
			old := filepath.Join(dir, fmt.Sprintf("old-%d.img", size))
			junk := make([]byte, size)
			fillRand(junk, 4)
			if err := os.WriteFile(old, junk, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, stderr, code := runCLIStdin(t, nil, "cp", holes, old); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := mustRead(t, old); !bytes.Equal(got, lunData) {
				t.Errorf("whole copy over a %d-byte file: %d bytes, equal to the LUN %v", size, len(got), bytes.Equal(got, lunData))
			}
			if a := allocated(t, old); a >= cpSize/2 {
				t.Errorf("whole copy over a %d-byte file: %d bytes allocated for about 3 MiB of data", size, a)
			}
		}
	})

	t.Run("thin LUN skips deallocated ranges", func(t *testing.T) {
		backing := tg.BackingFile(cpIQN, 4)
		f, err := os.OpenFile(backing, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 1<<20)
		fillRand(data, 4)
		for _, off := range []int64{2 << 20, cpSize - 1<<20} {
			if _, err := f.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		out := filepath.Join(t.TempDir(), "thin.img")
		_, stderr, code := runCLIStdin(t, nil, "cp", "--log-level", "debug", "--log-format", "json", tg.URL(cpIQN, 4), out)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if got := mustRead(t, out); !bytes.Equal(got, mustRead(t, backing)) {
			t.Fatal("image of the thin LUN differs from its backing file")
		}
		var skipped, blockSize int64 = -1, -1
		for _, line := range strings.Split(stderr, "\n") {
			var rec struct {
				Message   string `json:"message"`
				Bytes     int64  `json:"bytes"`
				BlockSize int64  `json:"block_size"`
			}
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			switch {
			case strings.HasPrefix(rec.Message, "deallocated ranges not read"):
				skipped = rec.Bytes
			case rec.Message == "requests":
				blockSize = rec.BlockSize
			}
		}
		// Without --block-size a request is one command: tgt's
		// MaxBurstLength, 256 KiB (1 MiB before, 4 commands each).
		if blockSize != 256<<10 {
			t.Errorf("requests of %d bytes without --block-size, want 262144 (tgt's MaxBurstLength)", blockSize)
		}
		if skipped < cpSize-4<<20 {
			t.Errorf("%d bytes skipped of a %d-byte LUN with 2 MiB of data; stderr:\n%s", skipped, cpSize, stderr)
		}
		if a := allocated(t, out); a > 4<<20 {
			t.Errorf("image has %d bytes allocated for 2 MiB of data", a)
		}
	})

	t.Run("ranges", func(t *testing.T) {
		dir := t.TempDir()
		part := filepath.Join(dir, "part")
		for _, r := range []struct{ off, n int64 }{{0, 1 << 20}, {3<<20 + 512, 2<<20 + 1024}, {cpSize - 4096, 4096}, {12345, 678}} {
			os.Remove(part)
			_, stderr, code := runCLIStdin(t, nil, "cp", "--verify", "--block-size", "512KiB",
				"--offset", strconv.FormatInt(r.off, 10), "--length", strconv.FormatInt(r.n, 10), src, part)
			if code != 0 {
				t.Fatalf("range %+v: exit %d: %s", r, code, stderr)
			}
			got := mustRead(t, part)
			if int64(len(got)) != r.off+r.n || !bytes.Equal(got[r.off:], want[r.off:r.off+r.n]) {
				t.Errorf("range %+v: file of %d bytes does not hold the LUN's bytes at the range", r, len(got))
			}
			out, stderr, code := runCLIStdin(t, nil, "cp", "--offset", strconv.FormatInt(r.off, 10),
				"--length", strconv.FormatInt(r.n, 10), src, "-")
			if code != 0 || !bytes.Equal(out, want[r.off:r.off+r.n]) {
				t.Errorf("range %+v to stdout: exit %d, %d bytes: %s", r, code, len(out), stderr)
			}
		}
		// File → LUN range: only the range changes.
		img := filepath.Join(dir, "img")
		data := make([]byte, cpSize)
		fillRand(data, 4)
		if err := os.WriteFile(img, data, 0o644); err != nil {
			t.Fatal(err)
		}
		before := mustRead(t, tg.BackingFile(cpIQN, 2))
		if _, stderr, code := runCLIStdin(t, nil, "cp", "--offset", "2MiB", "--length", "3MiB", img, dst); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		after := mustRead(t, tg.BackingFile(cpIQN, 2))
		if !bytes.Equal(after[2<<20:5<<20], data[2<<20:5<<20]) {
			t.Error("range not written")
		}
		if !bytes.Equal(after[:2<<20], before[:2<<20]) || !bytes.Equal(after[5<<20:], before[5<<20:]) {
			t.Error("bytes outside the range changed")
		}
		_, stderr, code := runCLIStdin(t, nil, "cp", "--offset", "15MiB", "--length", "2MiB", src, part)
		oneLineError(t, stderr, code, "runs past the end")
	})

	t.Run("errors", func(t *testing.T) {
		dir := t.TempDir()
		big := filepath.Join(dir, "big")
		if err := os.WriteFile(big, make([]byte, cpSize+512), 0o644); err != nil {
			t.Fatal(err)
		}
		before := fileSum(t, tg.BackingFile(cpIQN, 2), 0, cpSize)
		_, stderr, code := runCLIStdin(t, nil, "cp", big, dst)
		oneLineError(t, stderr, code, "larger than the")
		if fileSum(t, tg.BackingFile(cpIQN, 2), 0, cpSize) != before {
			t.Error("a refused copy wrote to the LUN")
		}
		small := filepath.Join(dir, "small")
		if err := os.WriteFile(small, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		roBefore := fileSum(t, tg.BackingFile(cpRO, 1), 0, 4<<20)
		_, stderr, code = runCLIStdin(t, nil, "cp", small, tg.URL(cpRO, 1))
		oneLineError(t, stderr, code, "read-only")
		if fileSum(t, tg.BackingFile(cpRO, 1), 0, 4<<20) != roBefore {
			t.Error("the read-only LUN changed")
		}
		_, stderr, code = runCLIStdin(t, nil, "cp", small, filepath.Join(dir, "other"))
		oneLineError(t, stderr, code, "iscsi:// URL")
		_, stderr, code = runCLIStdin(t, nil, "cp", "--verify", src, "-")
		oneLineError(t, stderr, code, "--verify")
		_, stderr, code = runCLIStdin(t, nil, "cp", "--offset", "20MiB", src, filepath.Join(dir, "never"))
		oneLineError(t, stderr, code, "beyond the end")
		if _, err := os.Stat(filepath.Join(dir, "never")); err == nil {
			t.Error("a refused copy left its destination file behind")
		}
	})

	t.Run("interrupt", func(t *testing.T) {
		// The null LUN is 1 TiB: the copy is still running at the signal.
		cmd := exec.Command(iscsifsBinary(t), "cp", "--no-progress", tg.URL(cpNull, 1), os.DevNull)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatal("cp did not stop within 30 s of SIGINT")
		}
		if cmd.ProcessState.ExitCode() == 0 {
			t.Fatalf("interrupted cp exited 0: %s", stderr.String())
		}
		m := regexp.MustCompile(`copied (\d+) of (\d+) bytes; resume with --offset (\d+)`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("no progress report on SIGINT: %q", stderr.String())
		}
		copied, _ := strconv.ParseInt(m[1], 10, 64)
		resume, _ := strconv.ParseInt(m[3], 10, 64)
		// Requests are one command each by default: tgt's MaxBurstLength, 256 KiB.
		if copied <= 0 || resume != copied || resume%(256<<10) != 0 || m[2] != fmt.Sprint(int64(1)<<40) {
			t.Errorf("report %q: want a positive, block-aligned offset of a 1 TiB copy", m[0])
		}
	})
}

// fillRand fills b with reproducible pseudo-random bytes.
func fillRand(b []byte, seed uint64) {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
}

// TestCPAcrossTargets runs the cp round trip and its refusals on every
// target implementation (istgt numbers LUNs from 0 and sends CHECK
// CONDITION without sense for writes to a read-only LU).
func TestCPAcrossTargets(t *testing.T) {
	for _, lab := range labs {
		t.Run(lab.kind, func(t *testing.T) {
			const size = 8 << 20
			first := lab.firstLUN
			tg := lab.start(t,
				TargetSpec{Name: cpIQN, LUNs: []LUNSpec{{LUN: first, Size: size, Fill: "random"}, {LUN: first + 1, Size: size}}},
				TargetSpec{Name: cpRO, LUNs: []LUNSpec{{LUN: first, Size: 4 << 20, Fill: "random", ReadOnly: true}}},
			)
			img := filepath.Join(t.TempDir(), "img")
			if _, stderr, code := runCLIStdin(t, nil, "cp", "--verify", tg.URL(cpIQN, first), img); code != 0 {
				t.Fatalf("LUN → file: exit %d: %s", code, stderr)
			}
			if _, stderr, code := runCLIStdin(t, nil, "cp", "--verify", img, tg.URL(cpIQN, first+1)); code != 0 {
				t.Fatalf("file → LUN: exit %d: %s", code, stderr)
			}
			if !bytes.Equal(mustRead(t, tg.BackingFile(cpIQN, first)), mustRead(t, tg.BackingFile(cpIQN, first+1))) {
				t.Fatal("the second LUN's backing file differs from the first's after LUN → file → LUN")
			}
			_, stderr, code := runCLIStdin(t, nil, "cp", img, tg.URL(cpRO, first))
			oneLineError(t, stderr, code, "read-only")
		})
	}
}
