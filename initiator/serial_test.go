package initiator

import "testing"

func TestSerialCompare(t *testing.T) {
	tests := []struct {
		a, b         uint32
		less, lessEq bool
	}{
		{0, 1, true, true},
		{1, 0, false, false},
		{5, 5, false, true},
		{0xffffffff, 0, true, true}, // wrap
		{0, 0xffffffff, false, false},
		{0xfffffff0, 0x10, true, true},
		{0x7fffffff, 0x80000000, true, true},
		{100, 100 + 0x7fffffff, true, true},
	}
	for _, tt := range tests {
		if got := serialLess(tt.a, tt.b); got != tt.less {
			t.Errorf("serialLess(%#x, %#x) = %v, want %v", tt.a, tt.b, got, tt.less)
		}
		if got := serialLessEq(tt.a, tt.b); got != tt.lessEq {
			t.Errorf("serialLessEq(%#x, %#x) = %v, want %v", tt.a, tt.b, got, tt.lessEq)
		}
	}
}
