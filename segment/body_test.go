package segment

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bridgeworks/bridge/mapping"
)

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// errorCode returns the code of err, or "" for nil.
func errorCode(err error) mapping.Code {
	if err == nil {
		return ""
	}
	return mapping.ErrorCode(err)
}

func TestReadBody(t *testing.T) {
	payload := []byte(`{"userId":"u1","event":"Signed Up"}`)
	zipped := gzipBytes(t, payload)
	tests := []struct {
		name     string
		body     []byte
		encoding string
		limit    int64
		want     []byte
		wantCode mapping.Code
	}{
		{name: "identity, no header", body: payload, limit: 100, want: payload},
		{name: "identity, explicit", body: payload, encoding: "identity", limit: 100, want: payload},
		{name: "gzip", body: zipped, encoding: "gzip", limit: 100, want: payload},
		{name: "gzip, upper case and spaces", body: zipped, encoding: " GZIP ", limit: 100, want: payload},
		{name: "x-gzip", body: zipped, encoding: "x-gzip", limit: 100, want: payload},
		{name: "exactly at the limit", body: payload, limit: int64(len(payload)), want: payload},
		{name: "empty body", body: nil, limit: 100, want: []byte{}},
		{name: "one byte over the limit", body: payload, limit: int64(len(payload)) - 1, wantCode: mapping.CodeTooLarge},
		{name: "gzip over the limit once decompressed", body: zipped, encoding: "gzip", limit: int64(len(payload)) - 1, wantCode: mapping.CodeTooLarge},
		{name: "deflate is not supported", body: payload, encoding: "deflate", limit: 100, wantCode: mapping.CodeInvalid},
		{name: "br is not supported", body: payload, encoding: "br", limit: 100, wantCode: mapping.CodeInvalid},
		{name: "gzip header on plain JSON", body: payload, encoding: "gzip", limit: 100, wantCode: mapping.CodeInvalid},
		{name: "truncated gzip", body: zipped[:len(zipped)-10], encoding: "gzip", limit: 100, wantCode: mapping.CodeInvalid},
		{name: "gzip with a wrong checksum", body: append(append([]byte{}, zipped[:len(zipped)-8]...), 0, 0, 0, 0, 0, 0, 0, 0), encoding: "gzip", limit: 100, wantCode: mapping.CodeInvalid},
		{name: "empty gzip body", body: nil, encoding: "gzip", limit: 100, wantCode: mapping.CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadBody(bytes.NewReader(tt.body), tt.encoding, tt.limit)
			if code := errorCode(err); code != tt.wantCode {
				t.Fatalf("got error %v (code %q), want code %q", err, code, tt.wantCode)
			}
			if err == nil && !bytes.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestReadBodyRefusesGzipBomb(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 100 { // 100 MB of zeros
		zw.Write(zeros)
	}
	zw.Close()
	bomb := buf.Bytes()

	in := &countingReader{r: bytes.NewReader(bomb)}
	got, err := ReadBody(in, "gzip", MaxBatchBytes)
	if code := errorCode(err); code != mapping.CodeTooLarge {
		t.Fatalf("got error %v, want code too_large", err)
	}
	if got != nil {
		t.Errorf("got %d bytes, want none", len(got))
	}
	// 500 KB of zeros take about 500 compressed bytes; the rest of the bomb
	// (about 100 KB) must never be read, let alone inflated.
	if in.n > int64(len(bomb))/10 {
		t.Errorf("read %d of %d compressed bytes, want reading to stop early", in.n, len(bomb))
	}
}

func TestReadBodyRefusesEndlessEmptyGzipMembers(t *testing.T) {
	member := gzipBytes(t, nil)
	body := bytes.Repeat(member, 100_000) // 2 MB of gzip decompressing to nothing
	in := &countingReader{r: bytes.NewReader(body)}
	_, err := ReadBody(in, "gzip", 1000)
	if code := errorCode(err); code != mapping.CodeTooLarge {
		t.Fatalf("got error %v, want code too_large", err)
	}
	if in.n > 10_000 {
		t.Errorf("read %d compressed bytes, want at most 10000", in.n)
	}
}

func TestReadBodyMaxBytesError(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("x", 100)))
	rec := httptest.NewRecorder()
	body := http.MaxBytesReader(rec, r.Body, 10)
	_, err := ReadBody(body, "", 1000)
	if code := errorCode(err); code != mapping.CodeTooLarge {
		t.Fatalf("got error %v, want code too_large", err)
	}
}

func TestReadBodyReadError(t *testing.T) {
	cause := errors.New("connection reset")
	_, err := ReadBody(io.MultiReader(strings.NewReader("{"), errReader{cause}), "", 1000)
	if code := errorCode(err); code != mapping.CodeInvalid {
		t.Fatalf("got error %v, want code invalid", err)
	}
	if !errors.Is(err, cause) {
		t.Errorf("got error %v, want it to wrap %v", err, cause)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestReadBodyBudget: bodies hold their memory from a shared budget while
// they are read and used; when it is spent, reading stops with unavailable,
// and what a body held is given back on release or on error.
func TestReadBodyBudget(t *testing.T) {
	b := newBudget(4 * chunkSize)
	small := bytes.Repeat([]byte("a"), chunkSize+10)
	first, err := readBody(bytes.NewReader(small), "", 1<<20, b, nil)
	if err != nil {
		t.Fatalf("first body: %v", err)
	}
	// Two chunks held.
	if _, err := readBody(bytes.NewReader(bytes.Repeat([]byte("b"), 3*chunkSize)), "", 1<<20, b, nil); errorCode(err) != mapping.CodeUnavailable {
		t.Fatalf("second body over what is left: got %v, want code unavailable", err)
	}
	if b.free != 2*chunkSize {
		t.Errorf("after the refused body: got %d bytes free, want %d (it gave back what it held)", b.free, 2*chunkSize)
	}
	// Putting the first body in one slice needs its size besides the chunks.
	got, err := first.bytes()
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("first body in one slice: got %d bytes, %v; want it whole", len(got), err)
	}
	if b.free != 4*chunkSize-int64(len(small)) {
		t.Errorf("after bytes: got %d bytes free, want %d (the slice held, the chunks given back)", b.free, 4*chunkSize-int64(len(small)))
	}
	first.release()
	if b.free != 4*chunkSize {
		t.Errorf("after release: got %d bytes free, want all %d", b.free, 4*chunkSize)
	}

	var tee bytes.Buffer
	zipped := gzipBytes(t, bytes.Repeat([]byte("c"), 60<<10))
	rd, err := readBody(bytes.NewReader(zipped), "gzip", 1<<20, nil, &tee)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.release()
	if got, err := rd.bytes(); err != nil || len(got) != 60<<10 || !bytes.Equal(tee.Bytes(), got) {
		t.Errorf("gzip with tee: got %d bytes (tee %d), %v; want 60 KB seen by both", len(got), tee.Len(), err)
	}
	if _, err := readBody(bytes.NewReader(zipped), "gzip", 1<<20, newBudget(chunkSize-1), nil); errorCode(err) != mapping.CodeUnavailable {
		t.Errorf("a budget smaller than one chunk: got %v, want code unavailable before inflating", err)
	}
}
