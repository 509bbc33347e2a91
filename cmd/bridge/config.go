package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// config is the bridge's configuration: every field has a flag and a BRIDGE_*
// environment variable of the same meaning; a flag given on the command line
// wins over the environment.
type config struct {
	Addr string
	DB   string

	SegmentWriteKeys       []string
	SegmentSharedSecret    string
	SegmentForwardWriteKey string
	SegmentEndpoint        string
	SegmentRelay           bool
	SegmentRateLimit       float64

	JimoAPIKey          string
	JimoEndpoint        string
	JimoTokenMode       string
	JimoSigningSecret   string
	JimoWebhookSecret   string
	JimoForwardTrack    bool
	JimoRequireSigned   bool
	JimoSessionRate     float64
	AllowedOrigins      []string
	AdminPassword       string
	BlockedIDs          []string
	MaxAnonymousIDs     int
	MaxLinks            int
	MergeOnEmail        bool
	LogFormat           string
	LogLevel            string
	ShutdownTimeout     time.Duration
	MaxDeliveryAttempts int
	DeliveryWorkers     int
	KeepDeliveredJobs   time.Duration
	TrustProxy          bool
	WALLimit            byteSize
	CommitTimeout       time.Duration

	// syncFile replaces the store's sync of its log; tests inject failures. No flag sets it.
	syncFile func(*os.File) error
}

// secretNames are the configuration fields that must never be logged or shown.
var secretNames = []string{"segment-shared-secret", "segment-forward-write-key", "jimo-api-key", "jimo-signing-secret", "jimo-webhook-secret", "admin-password", "segment-write-keys"}

// envName turns a flag name into its environment variable: admin-password -> BRIDGE_ADMIN_PASSWORD.
func envName(flagName string) string {
	return "BRIDGE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

type listValue struct{ p *[]string }

func (l listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listValue) Set(s string) error {
	*l.p = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l.p = append(*l.p, v)
		}
	}
	return nil
}

// parseConfig reads flags from args and, for flags not given, the BRIDGE_* variables from getenv.
func parseConfig(name string, args []string, getenv func(string) string, output io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&c.Addr, "addr", ":8080", "listen address")
	fs.StringVar(&c.DB, "db", "bridge.db", "SQLite database path")
	fs.Var(listValue{&c.SegmentWriteKeys}, "segment-write-keys", "comma-separated write keys accepted on /v1/* (generated when empty)")
	fs.StringVar(&c.SegmentSharedSecret, "segment-shared-secret", "", "shared secret verifying X-Signature on /segment/webhook (empty: the webhook requires a write key)")
	fs.StringVar(&c.SegmentForwardWriteKey, "segment-forward-write-key", "", "write key of the Segment source the bridge sends to (empty: no forwarding to Segment)")
	fs.StringVar(&c.SegmentEndpoint, "segment-endpoint", "https://api.segment.io", "Segment Tracking API endpoint")
	fs.BoolVar(&c.SegmentRelay, "segment-relay", false, "relay everything received on the Tracking API to Segment, as received")
	fs.Float64Var(&c.SegmentRateLimit, "segment-rate-limit", 0, "events per second accepted per write key (0: no limit)")
	fs.StringVar(&c.JimoAPIKey, "jimo-api-key", "", "Jimo server-side API key (empty: no forwarding to Jimo)")
	fs.StringVar(&c.JimoEndpoint, "jimo-endpoint", "", "base URL of Jimo's server-side API")
	fs.StringVar(&c.JimoTokenMode, "jimo-token-mode", "shared", "shared (the Jimo token is the user ID) or derived (an opaque HMAC of it)")
	fs.StringVar(&c.JimoSigningSecret, "jimo-signing-secret", "", "secret shared with the app's backend for session signatures (generated when empty)")
	fs.StringVar(&c.JimoWebhookSecret, "jimo-webhook-secret", "", "authenticates Jimo's outgoing webhooks (generated when empty)")
	fs.BoolVar(&c.JimoForwardTrack, "jimo-forward-track", false, "forward Segment track calls to Jimo as server-side events")
	fs.BoolVar(&c.JimoRequireSigned, "jimo-require-signature", false, "require a signature on every session report, also in shared mode")
	fs.Float64Var(&c.JimoSessionRate, "jimo-session-rate", 10, "session reports per second accepted per client IP (0: no limit)")
	fs.Var(listValue{&c.AllowedOrigins}, "allowed-origins", "comma-separated origins allowed to call /jimo/session from the page")
	fs.StringVar(&c.AdminPassword, "admin-password", "", "admin page and /api/v1 password (generated when empty)")
	fs.Var(listValue{&c.BlockedIDs}, "blocked-ids", "comma-separated extra values that are never identifiers")
	fs.IntVar(&c.MaxAnonymousIDs, "max-anonymous-ids", 100, "anonymous IDs per profile before a link becomes a conflict")
	fs.IntVar(&c.MaxLinks, "max-links", 1000, "links per profile before a link becomes a conflict")
	fs.BoolVar(&c.MergeOnEmail, "merge-on-email", false, "let an email address join profiles (anyone can type an email)")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long shutdown waits for in-flight requests")
	fs.IntVar(&c.MaxDeliveryAttempts, "max-delivery-attempts", 12, "deliveries tried per outbox job before it is dead")
	fs.IntVar(&c.DeliveryWorkers, "delivery-workers", 128, "outbox deliveries in flight at once")
	fs.DurationVar(&c.KeepDeliveredJobs, "keep-delivered-jobs", 7*24*time.Hour, "how long delivered outbox jobs stay visible before they are removed")
	fs.BoolVar(&c.TrustProxy, "trust-proxy", false, "take the client IP from X-Forwarded-For (only behind a proxy that sets it)")
	c.WALLimit = mapping.DefaultWALLimit
	fs.Var(&c.WALLimit, "wal-limit", "bound of SQLite's write-ahead log (bytes, or with KiB, MiB, GiB)")
	fs.DurationVar(&c.CommitTimeout, "commit-timeout", 10*time.Second, "how long a request waits for its events to be stored before it is answered 503")

	set := map[string]bool{}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := lookup(getenv, envName(f.Name)); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %v", envName(f.Name), redactIfSecret(f.Name, v), e)
			}
		}
	})
	if err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q; see -help", fs.Args())
	}
	if c.JimoTokenMode != "shared" && c.JimoTokenMode != "derived" {
		return c, fmt.Errorf("jimo token mode %q: want shared or derived", c.JimoTokenMode)
	}
	return c, nil
}

// byteSize is a size in bytes, given as a number with an optional KiB, MiB or GiB suffix.
type byteSize int64

func (b *byteSize) String() string {
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(*b) >= u.n && int64(*b)%u.n == 0 {
			return strconv.FormatInt(int64(*b)/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(*b), 10)
}

func (b *byteSize) Set(s string) error {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a positive number of bytes, optionally with KiB, MiB or GiB")
	}
	*b = byteSize(n * mult)
	return nil
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func redactIfSecret(flagName, v string) string {
	for _, s := range secretNames {
		if s == flagName {
			return "[redacted]"
		}
	}
	return v
}
