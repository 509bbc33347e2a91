package segment

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

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
	enc := strings.ToLower(strings.TrimSpace(contentEncoding))
	switch enc {
	case "", "identity":
		return readLimited(r, limit, "")
	case "gzip", "x-gzip":
		// Incompressible data grows by a few bytes per 16 KB block under gzip;
		// legitimate input never needs more than this.
		compressed := &io.LimitedReader{R: r, N: limit + limit/16 + 4096}
		zr, err := gzip.NewReader(compressed)
		if err != nil {
			if compressed.N <= 0 {
				return nil, tooLarge(limit)
			}
			return nil, readError(err, "gzip")
		}
		defer zr.Close()
		b, err := readLimited(zr, limit, "gzip")
		if err != nil && compressed.N <= 0 && mapping.ErrorCode(err) == mapping.CodeInvalid {
			return nil, tooLarge(limit)
		}
		return b, err
	default:
		return nil, mapping.Errorf(mapping.CodeInvalid,
			"Content-Encoding %q is not supported; send the body uncompressed or with Content-Encoding: gzip", truncate(contentEncoding, 40))
	}
}

// readLimited reads all of r, refusing more than limit bytes after reading limit+1.
func readLimited(r io.Reader, limit int64, encoding string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, readError(err, encoding)
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(limit)
	}
	return b, nil
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
