package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

// iscsifsBinary builds cmd/iscsifs once per test binary run.
func iscsifsBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "iscsifs-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "iscsifs")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "../cmd/iscsifs")...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	if off := os.Getenv(preadHelperEnv); off != "" {
		os.Exit(preadHelper(off, os.Args[len(os.Args)-1]))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// cliResult is one run of the binary.
type cliResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func runCLI(t testing.TB, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, iscsifsBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running iscsifs %v: %v", args, err)
	}
	if strings.Contains(res.stderr, "goroutine ") || strings.Contains(res.stderr, "panic:") {
		t.Errorf("iscsifs %v printed a stack trace:\n%s", args, res.stderr)
	}
	return res
}

// TestCLI checks discover and ls as a user runs them, on tgt and istgt.
func TestCLI(t *testing.T) {
	for _, lab := range labs {
		t.Run(lab.kind, func(t *testing.T) {
			tg := lab.start(t, labSpecs(lab)...)
			plainLUN := lab.firstLUN
			chapURL := fmt.Sprintf("iscsi://%s/%s", tg.Portal, labCHAP)

			t.Run("discover", func(t *testing.T) {
				r := runCLI(t, nil, "discover", tg.Portal)
				if r.code != 0 {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				for _, spec := range labSpecs(lab) {
					want := fmt.Sprintf("%s  %s,", spec.Name, tg.Portal)
					if !strings.Contains(r.stdout, want) {
						t.Errorf("discover output lacks %q:\n%s", want, r.stdout)
					}
				}
				j := runCLI(t, nil, "discover", "--json", tg.Portal)
				var targets []struct {
					Name    string `json:"name"`
					Portals []struct {
						Address string `json:"address"`
					} `json:"portals"`
				}
				if err := json.Unmarshal([]byte(j.stdout), &targets); err != nil || len(targets) != len(labSpecs(lab)) {
					t.Errorf("discover --json: %v, %d targets:\n%s", err, len(targets), j.stdout)
				}
			})

			t.Run("ls", func(t *testing.T) {
				r := runCLI(t, nil, "ls", fmt.Sprintf("iscsi://%s/%s", tg.Portal, labPlain))
				if r.code != 0 {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				for _, spec := range labSpecs(lab)[0].LUNs {
					want := fmt.Sprintf("%d disk %d 512 ", spec.LUN, spec.Size)
					if !strings.Contains(r.stdout, want) {
						t.Errorf("ls output lacks %q:\n%s", want, r.stdout)
					}
				}
				if lab.kind == "tgt" && !strings.Contains(r.stdout, "0 controller 0 0 ") {
					t.Errorf("ls does not show tgt's controller LUN 0:\n%s", r.stdout)
				}
				// One LUN URL, JSON.
				j := runCLI(t, nil, "ls", "--json", fmt.Sprintf("iscsi://%s/%s/%d", tg.Portal, labPlain, plainLUN))
				var luns []struct {
					LUN  int   `json:"lun"`
					Size int64 `json:"size"`
				}
				if err := json.Unmarshal([]byte(j.stdout), &luns); err != nil || len(luns) != 1 || luns[0].Size != 64<<20 {
					t.Errorf("ls --json of one LUN: %v %+v\n%s", err, luns, j.stdout)
				}
				// A portal URL lists every target's LUNs.
				// istgt requires mutual CHAP on its mutual target: that one
				// fails (reported, exit 1) and the others are still listed.
				p := runCLI(t, nil, "ls", "--chap-user", chapUser, "--chap-secret", chapSecret, "iscsi://"+tg.Portal)
				if !strings.Contains(p.stdout, labPlain+" ") || !strings.Contains(p.stdout, labRO+" ") || !strings.Contains(p.stdout, labCHAP+" ") {
					t.Errorf("ls of the portal misses targets (exit %d):\n%s%s", p.code, p.stdout, p.stderr)
				}
				wantCode := 0
				if lab.kind == "istgt" {
					wantCode = 1
					if !strings.Contains(p.stderr, labMutual) {
						t.Errorf("the failed mutual target is not reported:\n%s", p.stderr)
					}
				}
				if p.code != wantCode {
					t.Errorf("ls of the portal: exit %d, want %d\n%s", p.code, wantCode, p.stderr)
				}
			})

			t.Run("chap", func(t *testing.T) {
				secretFile := filepath.Join(t.TempDir(), "secret")
				os.WriteFile(secretFile, []byte(chapSecret+"\n"), 0o600)
				tests := []struct {
					name string
					env  []string
					args []string
				}{
					{"flags", nil, []string{"ls", "--chap-user", chapUser, "--chap-secret", chapSecret, chapURL}},
					{"secret file", nil, []string{"ls", "--chap-user", chapUser, "--chap-secret-file", secretFile, chapURL}},
					{"environment", []string{"ISCSIFS_CHAP_USER=" + chapUser, "ISCSIFS_CHAP_SECRET=" + chapSecret}, []string{"ls", chapURL}},
					{"url", nil, []string{"ls", fmt.Sprintf("iscsi://%s%%%s@%s/%s", chapUser, chapSecret, tg.Portal, labCHAP)}},
					{"mutual", nil, []string{"ls", "--chap-user", chapUser, "--chap-secret", chapSecret, "--mutual-user", mutualUser, "--mutual-secret", mutualSecret, fmt.Sprintf("iscsi://%s/%s", tg.Portal, labMutual)}},
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						r := runCLI(t, tt.env, tt.args...)
						if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("%d disk %d 512", lab.firstLUN, 8<<20)) {
							t.Errorf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
						}
					})
				}
			})

			t.Run("errors", func(t *testing.T) {
				tests := []struct {
					name string
					args []string
					want string
				}{
					{"wrong secret", []string{"ls", "--chap-user", chapUser, "--chap-secret", "wrong-secret-1234", chapURL}, "authentication failed"},
					{"unknown target", []string{"ls", fmt.Sprintf("iscsi://%s/iqn.2026-11.lab:nosuch", tg.Portal)}, "target not found"},
					{"unreachable portal", []string{"discover", "127.0.0.1:1"}, "connection refused"},
					{"bad url", []string{"ls", "http://x/y"}, "iscsi://"},
				}
				for _, tt := range tests {
					t.Run(tt.name, func(t *testing.T) {
						r := runCLI(t, nil, tt.args...)
						lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
						last := lines[len(lines)-1]
						if r.code == 0 || !strings.Contains(last, tt.want) || !strings.HasPrefix(last, "iscsifs: ") {
							t.Errorf("exit %d, stderr %q: want non-zero and a line with %q", r.code, r.stderr, tt.want)
						}
						if r.took > 5*time.Second {
							t.Errorf("took %v, want < 5s", r.took)
						}
					})
				}
			})

			// A portal mount logs in to a target when its directory is first
			// used: without credentials the CHAP target's directory fails
			// with EACCES, the plain one serves, and the CHAP target stays
			// not logged in; the mount itself started fine.
			t.Run("portal mount without credentials", func(t *testing.T) {
				RequireFUSE(t)
				m := startMount(t, iscsifsBinary(t), tg.PortalURL(), "--read-only")
				lun := fmt.Sprintf("lun%d", plainLUN)
				if _, err := os.Stat(m.path(filepath.Join(labPlain, lun))); err != nil {
					t.Errorf("plain target: %v", err)
				}
				_, err := os.Stat(m.path(filepath.Join(labCHAP, lun)))
				if !errors.Is(err, syscall.EACCES) {
					t.Errorf("CHAP target without credentials: %v, want EACCES", err)
				}
				states := m.targetStates(t)
				if states[labPlain] != "logged-in" || states[labCHAP] != "not-logged-in" {
					t.Errorf("states after the failed login: %v", states)
				}
				m.term(t)
			})

			t.Run("no secret in logs", func(t *testing.T) {
				runs := [][]string{
					{"ls", "--log-level", "debug", "--log-format", "json", "--chap-user", chapUser, "--chap-secret", chapSecret, "--mutual-user", mutualUser, "--mutual-secret", mutualSecret, fmt.Sprintf("iscsi://%s/%s", tg.Portal, labMutual)},
					{"ls", "--log-level", "debug", "--chap-user", chapUser, "--chap-secret", "wrong-secret-abcdef", chapURL},
					{"ls", "--log-level", "debug", fmt.Sprintf("iscsi://%s%%%s@%s/%s", chapUser, chapSecret, tg.Portal, labCHAP)},
				}
				for _, args := range runs {
					r := runCLI(t, nil, args...)
					for _, secret := range []string{chapSecret, mutualSecret, "wrong-secret-abcdef"} {
						if strings.Contains(r.stderr, secret) || strings.Contains(r.stdout, secret) {
							t.Errorf("secret %q appears in the output of %v", secret, args[:3])
						}
					}
					if !strings.Contains(r.stderr, "debug") && !strings.Contains(r.stderr, "DBG") {
						t.Errorf("no debug log lines at --log-level debug:\n%s", r.stderr)
					}
				}
			})
		})
	}
}
