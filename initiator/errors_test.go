package initiator

import "testing"

// TestLoginErrorKinds: the Status-Class/Detail pairs (RFC 7143 §11.13.5)
// behind LoginError's predicates.
func TestLoginErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		class, detail             uint8
		auth, notFound, temporary bool
	}{
		{2, 0x01, true, false, false},  // authentication failure
		{2, 0x02, true, false, false},  // authorization failure
		{2, 0x03, false, true, false},  // not found
		{2, 0x04, false, true, false},  // target removed
		{2, 0x07, false, false, false}, // missing parameter
		{3, 0x01, false, false, true},  // service unavailable
		{3, 0x02, false, false, true},  // out of resources
	} {
		e := &LoginError{Class: tc.class, Detail: tc.detail}
		if e.IsAuthFailure() != tc.auth || e.IsTargetNotFound() != tc.notFound || e.Temporary() != tc.temporary {
			t.Errorf("%02x/%02x: auth %v, not found %v, temporary %v", tc.class, tc.detail, e.IsAuthFailure(), e.IsTargetNotFound(), e.Temporary())
		}
	}
}
