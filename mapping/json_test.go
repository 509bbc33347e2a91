package mapping

import "testing"

func TestJSONDepth(t *testing.T) {
	tests := []struct {
		in         string
		stop, want int
	}{
		{`{}`, 0, 1},
		{`{"a":[1,{"b":2}]}`, 0, 3},
		{`{"a":"[[[{{{"}`, 0, 1}, // brackets inside strings do not count
		{`{"a":"\"[[["}`, 0, 1},  // nor after an escaped quote
		{`[[[[[[[[[[`, 3, 4},     // stops just past stop
		{`1`, 0, 0},
	}
	for _, tt := range tests {
		if got := JSONDepth([]byte(tt.in), tt.stop); got != tt.want {
			t.Errorf("JSONDepth(%s, %d) = %d, want %d", tt.in, tt.stop, got, tt.want)
		}
	}
}
