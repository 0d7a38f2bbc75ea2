package fusefs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestAddRemoveFile adds and removes files while the mount serves: a name
// the kernel has cached as missing appears at once, a removed one is gone at
// once, and a handle opened before the removal keeps reading its File.
func TestAddRemoveFile(t *testing.T) {
	lun := newMemFile(mib, 31)
	m, dir := mountT(t, []Entry{{Path: "t/lun1", File: lun}}, Options{})
	part := filepath.Join(dir, "t/lun1-part1")
	if _, err := os.Stat(part); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat before AddFile: %v, want ENOENT (now cached as a negative entry)", err)
	}
	pf := newMemFile(64<<10, 32)
	if err := m.AddFile("t/lun1-part1", pf); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(part)
	if err != nil || !bytes.Equal(got, pf.snapshot()) {
		t.Fatalf("read of the added file: %v (%d bytes)", err, len(got))
	}
	for _, tc := range []struct {
		path string
		file File
	}{
		{"t/lun1-part1", pf},     // taken
		{"t/lun1", pf},           // taken by a Mount entry
		{"nodir/lun1-part1", pf}, // no such directory
		{"t/lun1/x", pf},         // below a file
		{"../x", pf},             // not clean
	} {
		if err := m.AddFile(tc.path, tc.file); err == nil {
			t.Errorf("AddFile(%q) succeeded", tc.path)
		}
	}
	held, err := os.Open(part)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := m.RemoveFile("t/lun1-part1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(part); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat after RemoveFile: %v, want ENOENT", err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "t"))
	if err != nil || len(ents) != 1 || ents[0].Name() != "lun1" {
		t.Errorf("listing after RemoveFile: %v %v, want only lun1", ents, err)
	}
	buf := make([]byte, 4096)
	if _, err := held.ReadAt(buf, 4096); err != nil || !bytes.Equal(buf, pf.snapshot()[4096:8192]) {
		t.Errorf("a handle opened before RemoveFile reads %v", err)
	}
	if err := m.RemoveFile("t/lun1-part1"); err == nil {
		t.Error("second RemoveFile succeeded")
	}
	// The name can be used again, for another File.
	pf2 := newMemFile(32<<10, 33)
	if err := m.AddFile("t/lun1-part1", pf2); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(part); err != nil || fi.Size() != 32<<10 {
		t.Errorf("stat of the re-added file: %v, %v", fi, err)
	}
}
