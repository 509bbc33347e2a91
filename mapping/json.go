package mapping

// MaxJSONDepth is the deepest nesting of objects and arrays that any JSON the
// bridge reads may have, on every route (DESIGN §5): deeper input would cost
// memory and time in every later reader, the admin page included.
const MaxJSONDepth = 64

// JSONDepth returns the deepest nesting of objects and arrays in the JSON
// text b, or stop+1 as soon as it passes stop (when stop > 0), so a hostile
// body costs one partial scan. It does not check the syntax (encoding/json
// does that afterwards). Written by hand because it must run before
// encoding/json sees the bytes, in one pass, allocating nothing; the
// decoders' fuzz tests hold it against encoding/json.
func JSONDepth(b []byte, stop int) int {
	d, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			d++
			if d > deepest {
				deepest = d
				if stop > 0 && deepest > stop {
					return deepest
				}
			}
		case '}', ']':
			d--
		}
	}
	return deepest
}
