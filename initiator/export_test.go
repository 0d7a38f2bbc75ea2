package initiator

// What the examples (package initiator_test) need from the package's own
// test files.

// ExampleTarget is the in-process target the examples talk to: LUN 0, a
// 1 MiB disk of 512-byte blocks, under any target name.
type ExampleTarget struct {
	ft *fakeTarget
	// Portal is the target's host:port on 127.0.0.1.
	Portal string
}

// StartExampleTarget starts an ExampleTarget; with user set, it requires
// CHAP with that user and secret. Discovery lists target at the portal.
func StartExampleTarget(target, user, secret string) (*ExampleTarget, error) {
	ft, err := listenFakeTarget(1 << 20)
	if err != nil {
		return nil, err
	}
	if user != "" {
		ft.chap = &fakeCHAP{user: user, secret: secret}
	}
	e := &ExampleTarget{ft: ft, Portal: ft.ln.Addr().String()}
	ft.sendTargets = "TargetName=" + target + "\x00TargetAddress=" + e.Portal + ",1\x00"
	ft.start()
	return e, nil
}

// Close stops the target.
func (e *ExampleTarget) Close() { e.ft.close() }
