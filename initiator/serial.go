package initiator

// Serial number arithmetic for 32-bit sequence numbers (RFC 1982), used for
// CmdSN, ExpCmdSN, MaxCmdSN and StatSN comparisons (RFC 7143 §4.2.2.1). It is
// the only place sequence numbers are compared.

// serialLess reports a < b in serial arithmetic.
func serialLess(a, b uint32) bool {
	return a != b && int32(b-a) > 0
}

// serialLessEq reports a <= b in serial arithmetic.
func serialLessEq(a, b uint32) bool {
	return a == b || serialLess(a, b)
}
