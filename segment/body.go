package segment

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/bridgeworks/bridge/mapping"
)

// ReadBody reads an HTTP request body sent with the given Content-Encoding
// ("" or "identity": as is; "gzip" or "x-gzip": decompressed) and returns at
// most limit bytes of decompressed content.
//
// The limit applies to the decompressed size, and reading stops after limit+1
// decompressed bytes, so a gzip bomb is refused without being inflated. A body
// over the limit is a *mapping.Error with CodeTooLarge; an unsupported
// encoding, corrupt or truncated gzip, or a body that cannot be read is
// CodeInvalid. Compressed input is also capped (a little above limit), so an
// endless stream of empty gzip members cannot keep the reader busy.
func ReadBody(r io.Reader, contentEncoding string, limit int64) ([]byte, error) {
	body, _, err := readBody(r, contentEncoding, limit, nil, nil)
	return body, err
}

// readBody is ReadBody with the body's memory held from b (nil: unbounded)
// and every decompressed byte also written to tee (if not nil) as it is read,
// so a body can be hashed while it streams in. release gives the memory back
// to b; call it once the body is no longer used (it is a no-op after an
// error). When b cannot hold more, reading stops with CodeUnavailable.
func readBody(r io.Reader, contentEncoding string, limit int64, b *budget, tee io.Writer) (body []byte, release func(), err error) {
	release = func() {}
	enc := strings.ToLower(strings.TrimSpace(contentEncoding))
	if enc != "" && enc != "identity" && enc != "gzip" && enc != "x-gzip" {
		return nil, release, mapping.Errorf(mapping.CodeInvalid,
			"Content-Encoding %q is not supported; send the body uncompressed or with Content-Encoding: gzip", truncate(contentEncoding, 40))
	}
	// The first buffer is reserved before anything is read or inflated, so
	// the budget also bounds how many bodies are being read at once.
	rd := &bodyReader{budget: b, limit: limit, tee: tee}
	if err := rd.grow(); err != nil {
		return nil, release, err
	}
	release = rd.release
	defer func() {
		if err != nil {
			rd.release()
			body = nil
		}
	}()
	if enc == "" || enc == "identity" {
		body, err = rd.readAll(r, "")
		return body, release, err
	}
	// Incompressible data grows by a few bytes per 16 KB block under gzip;
	// legitimate input never needs more than this.
	compressed := &io.LimitedReader{R: r, N: limit + limit/16 + 4096}
	zr, err := gzip.NewReader(compressed)
	if err != nil {
		if compressed.N <= 0 {
			return nil, release, tooLarge(limit)
		}
		return nil, release, readError(err, "gzip")
	}
	defer zr.Close()
	body, err = rd.readAll(zr, "gzip")
	if err != nil && compressed.N <= 0 && mapping.ErrorCode(err) == mapping.CodeInvalid {
		return nil, release, tooLarge(limit)
	}
	return body, release, err
}

// bodyReader reads one body into a buffer that doubles as it fills, up to
// limit+1 bytes, holding the buffer's capacity from its budget.
type bodyReader struct {
	budget *budget
	limit  int64
	tee    io.Writer
	buf    []byte
	held   int64
}

// firstBuffer is the capacity a body is first read into.
const firstBuffer = 16 << 10

// grow replaces the full buffer by one twice its size (at most limit+1),
// reserving the new one from the budget before allocating it.
func (rd *bodyReader) grow() error {
	size := min(max(firstBuffer, 2*int64(cap(rd.buf))), rd.limit+1)
	if !rd.budget.take(size) {
		return busy()
	}
	nb := make([]byte, len(rd.buf), size)
	copy(nb, rd.buf)
	rd.budget.give(int64(cap(rd.buf)))
	rd.buf, rd.held = nb, size
	return nil
}

func (rd *bodyReader) release() {
	rd.budget.give(rd.held)
	rd.held = 0
}

// readAll reads r to its end, refusing more than limit bytes after reading limit+1.
func (rd *bodyReader) readAll(r io.Reader, encoding string) ([]byte, error) {
	for {
		if len(rd.buf) == cap(rd.buf) {
			if int64(len(rd.buf)) > rd.limit {
				return nil, tooLarge(rd.limit)
			}
			if err := rd.grow(); err != nil {
				return nil, err
			}
		}
		n, err := r.Read(rd.buf[len(rd.buf):cap(rd.buf)])
		if n > 0 && rd.tee != nil {
			rd.tee.Write(rd.buf[len(rd.buf) : len(rd.buf)+n])
		}
		rd.buf = rd.buf[:len(rd.buf)+n]
		if int64(len(rd.buf)) > rd.limit {
			return nil, tooLarge(rd.limit)
		}
		if err == io.EOF {
			return rd.buf, nil
		}
		if err != nil {
			return nil, readError(err, encoding)
		}
	}
}

// budget bounds the bytes of request bodies held in memory at once, across
// requests. Its methods are safe for concurrent use; a nil *budget bounds
// nothing.
type budget struct {
	mu   sync.Mutex
	free int64
}

func newBudget(n int64) *budget { return &budget{free: n} }

// take reserves n bytes and reports whether they were free; when they were
// not, nothing is reserved.
func (b *budget) take(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > b.free {
		return false
	}
	b.free -= n
	return true
}

// give returns n bytes reserved with take.
func (b *budget) give(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
}

// busy is the answer when the budget is spent: the client retries (Segment
// and its libraries retry 503).
func busy() error {
	return mapping.Errorf(mapping.CodeUnavailable,
		"the bridge is reading as many request bodies as it holds in memory at once; retry in a second")
}

func readError(err error, encoding string) error {
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return tooLarge(maxBytes.Limit)
	}
	if encoding == "gzip" {
		return &mapping.Error{Code: mapping.CodeInvalid, Err: err,
			Message: "the body is not valid gzip (corrupt or truncated); send a complete gzip stream with Content-Encoding: gzip, or send it uncompressed"}
	}
	return &mapping.Error{Code: mapping.CodeInvalid, Err: err,
		Message: "the request body could not be read to the end; send the complete body again"}
}

func tooLarge(limit int64) error {
	return mapping.Errorf(mapping.CodeTooLarge,
		"the request body is over %s after decompression; send at most 32 KB per call and 500 KB per batch, splitting larger batches", formatBytes(limit))
}

// formatBytes renders n as "32 KB", "500 KB", "16 MB" or "1234 bytes".
func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KB", n>>10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

// truncate shortens s to at most n bytes for quoting in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
