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
	rd, err := readBody(r, contentEncoding, limit, nil, nil)
	if err != nil {
		return nil, err
	}
	return rd.bytes()
}

// readBody reads a body as ReadBody does, into fixed-size chunks whose
// memory is held from b (nil: unbounded), writing every decompressed byte
// also to tee (if not nil) as it is read, so a body can be hashed while it
// streams in and refused without ever being copied whole. When b cannot
// hold the next chunk, reading stops with CodeUnavailable. On success the
// caller owns the returned body: it calls bytes for the content, or release
// to give everything back.
func readBody(r io.Reader, contentEncoding string, limit int64, b *budget, tee io.Writer) (*body, error) {
	enc := strings.ToLower(strings.TrimSpace(contentEncoding))
	if enc != "" && enc != "identity" && enc != "gzip" && enc != "x-gzip" {
		return nil, mapping.Errorf(mapping.CodeInvalid,
			"Content-Encoding %q is not supported; send the body uncompressed or with Content-Encoding: gzip", truncate(contentEncoding, 40))
	}
	rd := &body{budget: b, limit: limit, tee: tee}
	// The first chunk is reserved before anything is read or inflated, so
	// the budget also bounds how many bodies are being read at once.
	if err := rd.grow(); err != nil {
		return nil, err
	}
	var err error
	if enc == "" || enc == "identity" {
		err = rd.readFrom(r, "")
	} else {
		err = rd.readGzip(r)
	}
	if err != nil {
		rd.release()
		return nil, err
	}
	return rd, nil
}

func (rd *body) readGzip(r io.Reader) error {
	// Incompressible data grows by a few bytes per 16 KB block under gzip;
	// legitimate input never needs more than this.
	compressed := &io.LimitedReader{R: r, N: rd.limit + rd.limit/16 + 4096}
	zr, err := gzip.NewReader(compressed)
	if err != nil {
		if compressed.N <= 0 {
			return tooLarge(rd.limit)
		}
		return readError(err, "gzip")
	}
	defer zr.Close()
	err = rd.readFrom(zr, "gzip")
	if err != nil && compressed.N <= 0 && mapping.ErrorCode(err) == mapping.CodeInvalid {
		return tooLarge(rd.limit)
	}
	return err
}

// chunkSize is the size of the pieces a body is read into. Chunks of
// refused bodies are reused, so a flood of them makes no garbage.
const chunkSize = 32 << 10

var chunks = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// body is a request body read into chunks, up to limit+1 bytes, holding
// their memory from its budget until release.
type body struct {
	budget *budget
	limit  int64
	tee    io.Writer
	chunks []*[chunkSize]byte
	n      int64 // bytes read
	held   int64
	whole  []byte // the content once bytes has put it in one slice
}

// grow adds a chunk, reserving it from the budget first.
func (rd *body) grow() error {
	if !rd.budget.take(chunkSize) {
		return busy()
	}
	rd.held += chunkSize
	rd.chunks = append(rd.chunks, chunks.Get().(*[chunkSize]byte))
	return nil
}

// readFrom reads r to its end, refusing more than limit bytes after reading limit+1.
func (rd *body) readFrom(r io.Reader, encoding string) error {
	for {
		used := int(rd.n % chunkSize)
		if used == 0 && rd.n > 0 {
			if err := rd.grow(); err != nil {
				return err
			}
		}
		room := rd.chunks[len(rd.chunks)-1][used:]
		if left := rd.limit + 1 - rd.n; int64(len(room)) > left {
			room = room[:left]
		}
		n, err := r.Read(room)
		if n > 0 && rd.tee != nil {
			rd.tee.Write(room[:n])
		}
		rd.n += int64(n)
		if rd.n > rd.limit {
			return tooLarge(rd.limit)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return readError(err, encoding)
		}
	}
}

// bytes returns the content in one slice, held from the budget until
// release; the chunks go back to the pool.
func (rd *body) bytes() ([]byte, error) {
	if rd.whole != nil || rd.n == 0 {
		return rd.whole, nil
	}
	if len(rd.chunks) == 1 {
		// A small body is copied out (the chunk's reservation covers the
		// copy), so the chunk goes back to the pool for the next request.
		rd.whole = append(make([]byte, 0, rd.n), rd.chunks[0][:rd.n]...)
		chunks.Put(rd.chunks[0])
		rd.chunks = nil
		return rd.whole, nil
	}
	if !rd.budget.take(rd.n) {
		return nil, busy()
	}
	whole := make([]byte, 0, rd.n)
	left := rd.n
	for _, c := range rd.chunks {
		k := min(left, chunkSize)
		whole = append(whole, c[:k]...)
		left -= k
	}
	rd.putChunks()
	rd.held += rd.n
	rd.whole = whole
	return whole, nil
}

// release gives back everything the body holds; call it once the content
// is no longer used.
func (rd *body) release() {
	if rd == nil {
		return
	}
	rd.putChunks()
	rd.budget.give(rd.held)
	rd.held = 0
}

// putChunks returns the chunks to the pool and their reservation to the budget.
func (rd *body) putChunks() {
	for _, c := range rd.chunks {
		chunks.Put(c)
	}
	rd.budget.give(int64(len(rd.chunks)) * chunkSize)
	rd.held -= int64(len(rd.chunks)) * chunkSize
	rd.chunks = nil
}

// budget bounds the bytes of request bodies held in memory at once, across
// requests. It only ever tries (a body never waits for memory another body
// holds, so bodies cannot deadlock each other): the semantics of
// golang.org/x/sync/semaphore's Weighted.TryAcquire and Release, in a few
// lines rather than another module. Its methods are safe for concurrent
// use; a nil *budget bounds nothing.
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
