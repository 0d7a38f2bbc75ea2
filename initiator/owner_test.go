package initiator

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestOwner: wait stops the owner (nothing starts afterwards), returns when
// the goroutines have returned, and no later than its context.
func TestOwner(t *testing.T) {
	var o owner
	release := make(chan struct{})
	for range 3 {
		if !o.goroutine(func() { <-release }) {
			t.Fatal("goroutine refused before stop")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := o.wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait with goroutines blocked: %v", err)
	}
	if o.goroutine(func() { t.Error("ran after stop") }) {
		t.Error("goroutine accepted after stop")
	}
	close(release)
	if err := o.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	var idle owner
	if err := idle.wait(context.Background()); err != nil {
		t.Fatalf("wait on an owner that started nothing: %v", err)
	}
}
