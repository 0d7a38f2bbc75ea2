package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// newcomerProgram is the README's library example as a newcomer writes it
// in a module of their own: open a LUN by URL with the zero Config, read
// sector 0, close; 50 times, then count the goroutines left.
const newcomerProgram = `package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/iscsifs/iscsifs/initiator"
)

func main() {
	before := runtime.NumGoroutine()
	sector := make([]byte, 512)
	for range 50 {
		lun, err := initiator.Open(context.Background(), os.Args[1], initiator.Config{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if _, err := lun.ReadAt(sector, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := lun.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	time.Sleep(100 * time.Millisecond) // goroutines that Close stopped finish returning
	fmt.Printf("%x\n%d %d\n", sector, before, runtime.NumGoroutine())
}
`

// TestLibraryNewcomer: the program above, in a module of its own (go mod
// init, replace to this checkout), built offline from the module cache,
// reads the backing file's sector 0 from tgtd 50 times and leaves no
// goroutine behind.
func TestLibraryNewcomer(t *testing.T) {
	const iqn = "iqn.2026-12.lab:newcomer"
	tg := StartTGT(t, TargetSpec{Name: iqn, LUNs: []LUNSpec{{LUN: 1, Size: 8 << 20, Fill: "random"}}})
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(newcomerProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	goSum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), goSum, 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	for _, args := range [][]string{
		{"mod", "init", "x"},
		{"mod", "edit", "-require=github.com/iscsifs/iscsifs@v0.0.0", "-replace=github.com/iscsifs/iscsifs=" + repo},
		{"mod", "tidy"},
		{"build", "-o", "newcomer", "."},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	url := fmt.Sprintf("iscsi://%s/%s/1", tg.Portal, iqn)
	out, err := exec.Command(filepath.Join(dir, "newcomer"), url).CombinedOutput()
	if err != nil {
		t.Fatalf("the program: %v\n%s", err, out)
	}
	var sectorHex string
	var before, after int
	if _, err := fmt.Sscanf(string(out), "%s\n%d %d", &sectorHex, &before, &after); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	backing, err := os.ReadFile(tg.BackingFile(iqn, 1))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%x", backing[:512]); sectorHex != want {
		t.Errorf("sector 0 read by the program differs from the backing file")
	}
	if after != before {
		t.Errorf("%d goroutines before, %d after 50 opens and closes", before, after)
	}
}
