package initiator

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/iscsifs/iscsifs/initiator/pdu"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; the f.Add seeds below are
// the typical inputs.

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"iscsi://127.0.0.1/iqn.2026-11.lab:plain/1",
		"iscsi://alice%p%40ss@[::1]:3261/iqn.x/2?target_user=t&target_password=q%25&header_digest=crc32c",
		"iscsi://host",
		"iscsi://a:b@[fe80::1%25eth0]/iqn/0?auth=sha-256&data_digest=none",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s)
		if err != nil {
			if u != nil || !strings.HasPrefix(err.Error(), "iscsi URL: ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("bad failure: %v, %v", u, err)
			}
			return
		}
		if u.Host == "" || u.Port < 1 || u.Port > 65535 || u.LUN < -1 || u.LUN > maxURLLUN || (u.Target == "" && u.LUN != -1) {
			t.Fatalf("accepted an invalid URL: %#v", u.format(false))
		}
		again, err := ParseURL(u.format(false))
		if err != nil || !reflect.DeepEqual(again, u) {
			t.Fatalf("%q -> %q does not read back: %v", s, u.format(false), err)
		}
		// The redacted form does not depend on the secrets: the same URL
		// with other secrets prints the same. (Searching String() for the
		// secret misfires on secrets like "?" or "3260".)
		other := *u
		if other.Secret != "" {
			other.Secret = "other-secret-" + u.Secret
		}
		if other.MutualSecret != "" {
			other.MutualSecret = "other-secret-" + u.MutualSecret
		}
		if got, want := u.String(), other.String(); got != want {
			t.Fatalf("String() depends on the secrets: %q, with other secrets %q", got, want)
		}
	})
}

// fuzzCreds are mutual credentials; the random source is fixed so that runs
// repeat.
var fuzzCreds = Credentials{User: "alice", Secret: "initiator-secret", MutualUser: "tgt", MutualSecret: "target-secret-00"}

func FuzzCHAPRespond(f *testing.F) {
	f.Add([]byte("CHAP_A=5\x00CHAP_I=1\x00CHAP_C=0x0123456789abcdef\x00"), []byte("CHAP_N=tgt\x00CHAP_R=0x00112233445566778899aabbccddeeff\x00"))
	f.Add([]byte("CHAP_A=7\x00CHAP_I=0x2A\x00CHAP_C=0bASNFZ4mrze8=\x00"), []byte("CHAP_N=tgt\x00CHAP_R=0b\x00"))
	f.Add([]byte("CHAP_A=Reject\x00"), []byte{})
	f.Fuzz(func(t *testing.T, challenge, response []byte) {
		target, err := pdu.ParseText(challenge)
		if err != nil {
			return
		}
		rnd := bytes.Repeat([]byte{0x5a, 0xa5, 0x3c}, 200)
		c := newCHAPExchange(fuzzCreds, []CHAPAlgorithm{CHAPSHA3_256, CHAPSHA256, CHAPSHA1, CHAPMD5}, bytes.NewReader(rnd))
		c.sent = newChallengeLog(4)
		out, err := c.respond(target)
		var ae *AuthError
		if err != nil {
			if !errors.As(err, &ae) {
				t.Fatalf("respond error %v is not an *AuthError", err)
			}
			return
		}
		if len(out) != 4 || out[0].Key != "CHAP_N" || out[1].Key != "CHAP_R" || out[2].Key != "CHAP_I" || out[3].Key != "CHAP_C" {
			t.Fatalf("answer %v", out)
		}
		r, err := decodeBinary(out[1].Value, maxCHAPChallenge)
		if err != nil || len(r) != c.algorithm().digestSize() {
			t.Fatalf("CHAP_R %s for %v: %v", out[1].Value, c.algorithm(), err)
		}
		theirs, _ := pdu.Lookup(target, "CHAP_C")
		tc, _ := decodeBinary(theirs, maxCHAPChallenge)
		ours, err := decodeBinary(out[3].Value, maxCHAPChallenge)
		if err != nil || len(ours) < minOurChallenge || bytes.Equal(ours, tc) {
			t.Fatalf("our CHAP_C %s (theirs %x): %v", out[3].Value, tc, err)
		}
		if kv, err := pdu.ParseText(response); err == nil {
			if err := c.verify(kv); err != nil && !errors.As(err, &ae) {
				t.Fatalf("verify error %v is not an *AuthError", err)
			}
		}
		if !c.verified {
			id, _ := parseCHAPIdentifier(out[2].Value)
			genuine := chapResponse(c.algorithm(), id, fuzzCreds.MutualSecret, ours)
			if err := c.verify([]pdu.KV{{Key: "CHAP_N", Value: "tgt"}, {Key: "CHAP_R", Value: encodeHex(genuine)}}); err != nil {
				t.Fatalf("genuine mutual response refused: %v", err)
			}
		}
	})
}

func FuzzNegotiatorApply(f *testing.F) {
	f.Add([]byte("HeaderDigest=None\x00DataDigest=None\x00MaxBurstLength=262144\x00FirstBurstLength=65536\x00InitialR2T=Yes\x00ImmediateData=Yes\x00MaxOutstandingR2T=1\x00TargetPortalGroupTag=1\x00"), false)
	f.Add([]byte("HeaderDigest=None\x00MaxRecvDataSegmentLength=Irrelevant\x00MaxBurstLength=Irrelevant\x00"), true)
	f.Add([]byte("MaxRecvDataSegmentLength=262144\x00DefaultTime2Wait=0x10\x00X-vendor=1\x00IFMarker=No\x00"), false)
	f.Fuzz(func(t *testing.T, text []byte, discovery bool) {
		target, err := pdu.ParseText(text)
		if err != nil {
			return
		}
		for _, offerFirst := range []bool{true, false} {
			n := newNegotiator(DefaultNegotiationConfig(), discovery)
			if offerFirst {
				n.offer()
			}
			reply, err := n.apply(target)
			if err != nil {
				var ne *NegotiationError
				if !errors.As(err, &ne) || ne.Key == "" {
					t.Fatalf("apply error %v is not a *NegotiationError with a key", err)
				}
				continue
			}
			seen := map[string]bool{}
			for _, kv := range reply {
				if seen[kv.Key] || kv.Key == "" || kv.Value == "" || strings.ContainsAny(kv.Key, "=\x00") || strings.Contains(kv.Value, "\x00") {
					t.Fatalf("bad reply %v", reply)
				}
				seen[kv.Key] = true
			}
			if back, err := pdu.ParseText(pdu.EncodeText(nil, reply)); err != nil || len(back) != len(reply) {
				t.Fatalf("reply %v does not encode: %v", reply, err)
			}
			checkParams(t, n.result())
			// The same PDU again, and an empty one, never panic and keep
			// the result valid.
			if _, err := n.apply(target); err == nil {
				checkParams(t, n.result())
			}
			if _, err := n.apply(nil); err != nil {
				t.Fatalf("empty round: %v", err)
			}
			_ = n.missing()
		}
	})
}

func checkParams(t *testing.T, p Params) {
	t.Helper()
	in := func(v, lo, hi int) bool { return v >= lo && v <= hi }
	if !in(p.MaxRecvDataSegmentLength, 512, maxDataLength) || !in(p.TargetMaxRecvDataSegmentLength, 512, maxDataLength) ||
		!in(p.MaxBurstLength, 512, maxDataLength) || !in(p.FirstBurstLength, 512, p.MaxBurstLength) ||
		!in(p.MaxOutstandingR2T, 1, 65535) || !in(p.MaxConnections, 1, 1) || !in(p.ErrorRecoveryLevel, 0, 0) ||
		!in(p.DefaultTime2Wait, 0, 3600) || !in(p.DefaultTime2Retain, 0, 3600) || !in(p.TargetPortalGroupTag, -1, 65535) ||
		!p.DataPDUInOrder || !p.DataSequenceInOrder {
		t.Fatalf("result out of range: %+v", p)
	}
}
