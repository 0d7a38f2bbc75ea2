package initiator

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// fakeURL is the URL of LUN 0 of the fake target at portal.
func fakeURL(portal string) string { return "iscsi://" + portal + "/iqn.2026-11.test:fake/0" }

// TestOpen: Open with the zero Config logs in, opens the LUN the URL names
// and reads from it; Close logs the session out.
func TestOpen(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	portal := ft.start()
	ctx := context.Background()
	l, err := Open(ctx, fakeURL(portal), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Size() != 1<<20 || l.BlockSize() != 512 || l.Number() != 0 {
		t.Errorf("size %d, block size %d, LUN %d", l.Size(), l.BlockSize(), l.Number())
	}
	buf := make([]byte, 512)
	if _, err := l.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, ft.disk[:512]) {
		t.Error("sector 0 differs")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := len(ft.logoutRecords()); n != 1 {
		t.Errorf("%d logouts, want 1", n)
	}
	if _, err := l.ReadAt(buf, 0); !errors.Is(err, ErrSessionClosed) {
		t.Errorf("read after Close: %v, want ErrSessionClosed", err)
	}
}

// TestOpenCloseNoLeak: opening and closing a LUN 50 times leaves no
// goroutine behind, and every Close succeeds.
func TestOpenCloseNoLeak(t *testing.T) {
	ft := newFakeTarget(t, 1<<20)
	url := fakeURL(ft.start())
	checkNoLeak(t) // after the fake target's listener started
	for i := range 50 {
		l, err := Open(context.Background(), url, Config{})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if _, err := l.ReadAt(make([]byte, 512), 0); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
	if n := len(ft.logoutRecords()); n != 50 {
		t.Errorf("%d logouts, want 50", n)
	}
}

// TestOpenErrors: URLs that name no LUN are refused before any connection;
// a LUN that cannot be opened leaves no session behind.
func TestOpenErrors(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.onSCSI = func(c *fakeConn, m *pdu.SCSICommand) bool {
		if m.CDB[0] != 0x12 { // INQUIRY fails: not a usable LUN
			return false
		}
		c.respond(m, 2, fixedSense(0x05, 0x25, 0x00))
		return true
	}
	portal := ft.start()
	ctx := context.Background()
	for _, url := range []string{
		"iscsi://" + portal,
		"iscsi://" + portal + "/iqn.2026-11.test:fake",
		"http://" + portal + "/iqn.2026-11.test:fake/0",
		fakeURL(portal) + "?header_digest=md5",
	} {
		if _, err := Open(ctx, url, Config{}); err == nil || !strings.HasPrefix(err.Error(), "iscsi URL: ") {
			t.Errorf("%s: %v, want a URL error", url, err)
		}
	}
	if n := ft.logins.Load(); n != 0 {
		t.Errorf("%d logins for bad URLs", n)
	}
	if _, err := Open(ctx, fakeURL(portal), Config{}); err == nil {
		t.Fatal("no error for a LUN whose INQUIRY fails")
	}
	if n := len(ft.logoutRecords()); n != 1 {
		t.Errorf("%d logouts after a failed open, want 1", n)
	}
}

// TestOpenURLSettings: the URL's credentials and digests reach the login.
func TestOpenURLSettings(t *testing.T) {
	checkNoLeak(t)
	ft := newFakeTarget(t, 1<<20)
	ft.chap = &fakeCHAP{user: "alice", secret: "secret-of-alice"}
	ft.digests = true
	portal := ft.start()
	ctx := context.Background()
	if _, err := Open(ctx, "iscsi://alice%wrong-secret@"+portal+"/iqn.2026-11.test:fake/0", Config{}); err == nil {
		t.Fatal("login with a wrong secret succeeded")
	} else if le := (*LoginError)(nil); !errors.As(err, &le) || !le.IsAuthFailure() {
		t.Fatalf("wrong secret: %v, want an authentication LoginError", err)
	}
	l, err := Open(ctx, "iscsi://alice%secret-of-alice@"+portal+"/iqn.2026-11.test:fake/0?header_digest=crc32c&data_digest=crc32c", Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if p := l.Session().Params(); !p.HeaderDigest || !p.DataDigest {
		t.Errorf("digests %v %v, want both", p.HeaderDigest, p.DataDigest)
	}
	if _, err := l.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
}

// TestZeroConfigLogsNothing: a program that sets no Logger gets no output,
// not even through slog's default logger (which writes to stderr).
func TestZeroConfigLogsNothing(t *testing.T) {
	var zero Config
	if h := zero.withDefaults().Logger.Handler(); h != slog.DiscardHandler {
		t.Errorf("zero Config logs to %T, want slog.DiscardHandler", h)
	}
}
