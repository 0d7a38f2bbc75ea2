package pdu

// AHS is one Additional Header Segment (RFC 7143 §11.2.2).
//
// On the wire: AHSLength (2 bytes), AHSType (1 byte), the AHS-specific byte,
// then AHSLength-1 bytes of Data, padded with zeros to a multiple of 4.
// AHSLength counts the AHS-specific byte and Data, not AHSLength, AHSType or
// the padding (so an Extended CDB AHS has AHSLength = CDB length - 15).
type AHS struct {
	Type     uint8 // the whole AHSType byte: bits 0-1 reserved, bits 2-7 the AHS code
	Specific uint8 // the AHS-specific byte (reserved in both defined types)
	Data     []byte
}

// AHS codes (RFC 7143 §11.2.2.2).
const (
	AHSExtendedCDB    = 1 // Data: CDB bytes beyond the first 16
	AHSBidiReadLength = 2 // Data: 4-byte Bidirectional Read Expected Data Transfer Length
)

// maxAHSLen is the most TotalAHSLength can express: 255 words.
const maxAHSLen = 255 * 4

// maxAHSData is the largest Data one AHS can carry inside maxAHSLen.
const maxAHSData = maxAHSLen - 4

func ahsError(reason string) error {
	return &ProtocolError{Op: "parse AHS", Reason: reason}
}

// nextAHS splits the first AHS off b. a.Data aliases b.
func nextAHS(b []byte) (a AHS, rest []byte, err error) {
	if len(b) < 4 {
		return AHS{}, nil, ahsError("truncated AHS header")
	}
	n := int(be.Uint16(b[0:2]))
	if n == 0 {
		return AHS{}, nil, ahsError("AHSLength 0 leaves no room for the AHS-specific byte")
	}
	end := 3 + n
	if end > len(b) {
		return AHS{}, nil, ahsError("AHSLength runs past the end of the AHS")
	}
	a = AHS{Type: b[2], Specific: b[3]}
	if n > 1 {
		a.Data = b[4:end:end]
	}
	end += padLen(end)
	if end > len(b) {
		return AHS{}, nil, ahsError("AHS padding runs past the end of the AHS")
	}
	return a, b[end:], nil
}

// ParseAHS splits the additional header segments of a PDU (the TotalAHSLength*4
// bytes after the BHS). The Data of each AHS aliases b. AHS of unknown types
// are returned like the others; a length that does not fit is an error.
func ParseAHS(b []byte) ([]AHS, error) {
	if len(b)%4 != 0 {
		return nil, ahsError("length is not a multiple of 4")
	}
	var list []AHS
	for len(b) > 0 {
		a, rest, err := nextAHS(b)
		if err != nil {
			return nil, err
		}
		list = append(list, a)
		b = rest
	}
	return list, nil
}

// AppendAHS appends the wire form of a, padding included, to dst.
func AppendAHS(dst []byte, a AHS) ([]byte, error) {
	if len(a.Data) > maxAHSData {
		return dst, &ProtocolError{Op: "encode AHS", Reason: "data does not fit in 1020 bytes of AHS"}
	}
	n := 1 + len(a.Data)
	dst = append(dst, byte(n>>8), byte(n), a.Type, a.Specific)
	dst = append(dst, a.Data...)
	var zero [3]byte
	return append(dst, zero[:padLen(3+n)]...), nil
}
