package jimo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
)

// WebhookPath is the path of Jimo's server-side events endpoint, below the base URL.
const WebhookPath = "/sse/webhook"

// maxErrorBody is the most bytes of a refused request's response body that an error quotes.
const maxErrorBody = 200

// DefaultClientTimeout bounds one request when NewClient is given no http.Client.
const DefaultClientTimeout = 30 * time.Second

// Client sends outbox jobs to Jimo's server-side events API. It implements
// outbox.Sender: it never retries, and classifies every failure with a
// *outbox.DeliveryError. It is safe for concurrent use.
type Client struct {
	url    string
	apiKey string
	http   *http.Client
	// now is the clock Retry-After dates are read against.
	now func() time.Time
}

var _ outbox.Sender = (*Client)(nil)

// NewClient returns a client for the Jimo API at endpoint (the base URL, for
// example https://karabor-harbour.usejimo.com; a trailing slash is ignored)
// with the server-side API key apiKey. httpClient nil means a client with
// DefaultClientTimeout that keeps up to 64 idle connections to Jimo; a
// caller's client should set a timeout too, or pass contexts with deadlines.
func NewClient(endpoint, apiKey string, httpClient *http.Client) *Client {
	if httpClient == nil {
		// Keep a connection per concurrent delivery alive, not http.DefaultTransport's two.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		httpClient = &http.Client{Timeout: DefaultClientTimeout, Transport: t}
	}
	return &Client{
		url:    strings.TrimRight(endpoint, "/") + WebhookPath,
		apiKey: apiKey,
		http:   httpClient,
		now:    time.Now,
	}
}

// Send POSTs job.Payload (an IdentifyEvent or TrackEvent, see IdentifyJob and
// TrackJob) to {endpoint}/sse/webhook with the headers x-api-key,
// Content-Type: application/json and Idempotency-Key: job.MessageID, once.
//
// It returns nil on a 2xx answer. Any other outcome is a
// *outbox.DeliveryError: transient for 408, 429 (RetryAfter set from a
// Retry-After header in seconds or as an HTTP date), 5xx, network errors,
// timeouts and a cancelled ctx; permanent for any other status (the error
// quotes at most 200 bytes of the response body) and for a payload that is
// not a JSON object. Errors never contain the API key.
func (c *Client) Send(ctx context.Context, job mapping.Job) error {
	payload := bytes.TrimSpace(job.Payload)
	if len(payload) == 0 || payload[0] != '{' || !json.Valid(payload) {
		return &outbox.DeliveryError{Permanent: true,
			Err: fmt.Errorf("jimo: job %s: the payload is not a JSON object", job.MessageID)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(payload))
	if err != nil {
		return &outbox.DeliveryError{Permanent: true, Err: fmt.Errorf("jimo: build request: %w", err)}
	}
	req.Header.Set("x-api-key", c.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if job.MessageID != "" {
		req.Header.Set("Idempotency-Key", job.MessageID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// Network errors, timeouts, refused connections, a cancelled ctx:
		// none of them says the request was wrong.
		return &outbox.DeliveryError{Err: fmt.Errorf("jimo: POST %s: %w", WebhookPath, c.redact(err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
		return nil
	}
	// Read a little more than is quoted, so a key cut by the limit is still redacted.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, int64(maxErrorBody+len(c.apiKey))))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	msg := fmt.Sprintf("jimo: POST %s: %s", WebhookPath, resp.Status)
	if s := snippet(c.redactString(string(body)), maxErrorBody); s != "" {
		msg += ": " + s
	}
	return outbox.ClassifyStatus(resp.StatusCode, outbox.ParseRetryAfter(resp.Header.Get("Retry-After"), c.now()), errors.New(msg))
}

// redact returns err with the API key, should it appear in its text, masked.
func (c *Client) redact(err error) error {
	if c.apiKey == "" || !strings.Contains(err.Error(), c.apiKey) {
		return err
	}
	return errors.New(c.redactString(err.Error()))
}

func (c *Client) redactString(s string) string {
	if c.apiKey == "" {
		return s
	}
	return strings.ReplaceAll(s, c.apiKey, "[redacted]")
}

// snippet returns at most n bytes of s, cut at a character boundary, as valid
// UTF-8 without surrounding space.
func snippet(s string, n int) string {
	if len(s) > n {
		s = s[:n]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, ""))
}
