package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping/store"
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
	SegmentRateBurst       int

	JimoAPIKey          string
	JimoEndpoint        string
	JimoTokenMode       string
	JimoSigningSecret   string
	JimoWebhookSecret   string
	JimoForwardTrack    bool
	JimoRequireSigned   optionalBool
	JimoSessionRate     float64
	AllowedOrigins      []string
	AdminPassword       string
	AdminLoginRate      float64
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
	OutboxLease         time.Duration
	DeletionGrace       time.Duration
	KeepMessages        time.Duration
	WALLimit            byteSize
	CommitTimeout       time.Duration

	// syncFile replaces the store's sync of its log; tests inject failures. No flag sets it.
	syncFile func(*os.File) error
	// TrustedProxies are the proxies whose X-Forwarded-For is believed; empty:
	// the peer address is the client.
	TrustedProxies []*net.IPNet

	// jimoSigningExplicit records that the operator set the signing secret
	// (before a missing one is generated): it then requires signatures.
	jimoSigningExplicit bool
}

// jimoRequireSignature is the session signature policy (DESIGN §4): an
// explicit BRIDGE_JIMO_REQUIRE_SIGNATURE decides; without one, signatures
// are required exactly when the operator configured the signing secret. A
// generated secret with no explicit choice accepts unsigned reports (the
// admin overview warns about it). Derived mode requires them regardless.
func (c config) jimoRequireSignature() bool {
	if c.JimoRequireSigned.set {
		return c.JimoRequireSigned.value
	}
	return c.jimoSigningExplicit
}

// optionalBool is a boolean flag that remembers whether it was given.
type optionalBool struct{ set, value bool }

func (b *optionalBool) String() string {
	if b == nil || !b.set {
		return ""
	}
	return strconv.FormatBool(b.value)
}

func (b *optionalBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	b.set, b.value = true, v
	return nil
}

func (b *optionalBool) IsBoolFlag() bool { return true }

// removedFlag refuses a flag (and its variable) that no longer exists, saying what replaced it.
type removedFlag string

func (r removedFlag) String() string   { return "" }
func (r removedFlag) Set(string) error { return errors.New(string(r)) }
func (r removedFlag) IsBoolFlag() bool { return true }

// cidrList is a comma-separated list of CIDR ranges; a bare IP address is a
// range of one address.
type cidrList struct{ p *[]*net.IPNet }

func (l cidrList) String() string {
	if l.p == nil {
		return ""
	}
	var out []string
	for _, n := range *l.p {
		out = append(out, n.String())
	}
	return strings.Join(out, ",")
}

func (l cidrList) Set(s string) error {
	*l.p = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		if !strings.Contains(v, "/") {
			ip := net.ParseIP(v)
			if ip == nil {
				return fmt.Errorf("%q is neither a CIDR range (10.0.0.0/8) nor an IP address", v)
			}
			bits := 128
			if ip4 := ip.To4(); ip4 != nil {
				ip, bits = ip4, 32
			}
			*l.p = append(*l.p, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(v)
		if err != nil {
			return fmt.Errorf("%q is not a CIDR range such as 10.0.0.0/8 or fd00::/8", v)
		}
		*l.p = append(*l.p, n)
	}
	return nil
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
	fs.StringVar(&c.DB, "db", "bridge.db", "SQLite database path, or a postgres:// URL")
	fs.Var(listValue{&c.SegmentWriteKeys}, "segment-write-keys", "comma-separated write keys accepted on /v1/* (generated when empty)")
	fs.StringVar(&c.SegmentSharedSecret, "segment-shared-secret", "", "shared secret verifying X-Signature (and an optional Authorization: Bearer) on /segment/webhook (generated when empty)")
	fs.StringVar(&c.SegmentForwardWriteKey, "segment-forward-write-key", "", "write key of the Segment source the bridge sends to (empty: no forwarding to Segment)")
	fs.StringVar(&c.SegmentEndpoint, "segment-endpoint", "https://api.segment.io", "Segment Tracking API endpoint")
	fs.BoolVar(&c.SegmentRelay, "segment-relay", false, "relay everything received on the Tracking API to Segment, as received")
	fs.Float64Var(&c.SegmentRateLimit, "segment-rate-limit", 0, "events per second accepted on /v1/* per write key and client IP (0: no limit)")
	fs.IntVar(&c.SegmentRateBurst, "segment-rate-burst", 0, "events accepted at once per write key and client IP; one request costs at most this (0: one second's worth)")
	fs.StringVar(&c.JimoAPIKey, "jimo-api-key", "", "Jimo server-side API key (empty: no forwarding to Jimo)")
	fs.StringVar(&c.JimoEndpoint, "jimo-endpoint", "", "base URL of Jimo's server-side API")
	fs.StringVar(&c.JimoTokenMode, "jimo-token-mode", "shared", "shared (the Jimo token is the user ID) or derived (an opaque HMAC of it)")
	fs.StringVar(&c.JimoSigningSecret, "jimo-signing-secret", "", "secret shared with the app's backend for session signatures (generated when empty)")
	fs.StringVar(&c.JimoWebhookSecret, "jimo-webhook-secret", "", "authenticates Jimo's outgoing webhooks (generated when empty)")
	fs.BoolVar(&c.JimoForwardTrack, "jimo-forward-track", false, "forward Segment track calls to Jimo as server-side events")
	fs.Var(&c.JimoRequireSigned, "jimo-require-signature", "require a signature on every session report (default: true when the signing secret is configured, false when it is generated; derived mode always requires one)")
	fs.Float64Var(&c.JimoSessionRate, "jimo-session-rate", 10, "session reports per second accepted per client IP (0: no limit)")
	fs.Var(listValue{&c.AllowedOrigins}, "allowed-origins", "comma-separated origins allowed to call /jimo/session from the page")
	fs.StringVar(&c.AdminPassword, "admin-password", "", "admin page and /api/v1 password (generated when empty)")
	fs.Float64Var(&c.AdminLoginRate, "admin-login-rate", 2, "wrong admin passwords a minute accepted per client IP after 5 (0: no limit)")
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
	fs.DurationVar(&c.OutboxLease, "outbox-lease", 2*time.Minute, "how long a replica's claim of a delivery lasts: a killed replica's deliveries are taken over after it; a send must end by half of it after the claim")
	fs.DurationVar(&c.DeletionGrace, "deletion-grace", 24*time.Hour, "how long a privacy deletion holds the deleted identifiers back (hidden, never forwarded) before erasing them, so late older messages are decided in order (0: erase at once)")
	fs.Var(cidrList{&c.TrustedProxies}, "trusted-proxies", "comma-separated CIDR ranges of the proxies whose X-Forwarded-For is believed (empty: the peer address is the client)")
	fs.Var(removedFlag("BRIDGE_TRUST_PROXY (-trust-proxy) was removed: set BRIDGE_TRUSTED_PROXIES (-trusted-proxies) to the CIDR ranges of your proxies instead"), "trust-proxy", "removed: use -trusted-proxies")
	c.KeepMessages = 90 * 24 * time.Hour
	fs.Var(daysValue{&c.KeepMessages}, "keep-messages", "how long raw message payloads are kept, e.g. 90d or 2160h (0: forever; the identity graph and link log are kept until deletion)")
	c.WALLimit = store.DefaultWALLimit
	fs.Var(&c.WALLimit, "wal-limit", "bound of SQLite's write-ahead log (bytes, or with KiB, MiB, GiB)")
	fs.DurationVar(&c.CommitTimeout, "commit-timeout", 10*time.Second, "how long a request waits for its events to be stored before it is answered 503")

	fs.Usage = func() { printUsage(fs) }

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
	c.jimoSigningExplicit = c.JimoSigningSecret != ""
	if c.JimoTokenMode != "shared" && c.JimoTokenMode != "derived" {
		return c, fmt.Errorf("jimo token mode %q: want shared or derived", c.JimoTokenMode)
	}
	if c.OutboxLease < 2*time.Second {
		return c, fmt.Errorf("outbox lease %s: want at least 2s (a send must end by half of it)", c.OutboxLease)
	}
	return c, nil
}

// daysValue is a duration flag that also takes whole days ("90d").
type daysValue struct{ p *time.Duration }

func (d daysValue) String() string {
	if d.p == nil {
		return ""
	}
	if *d.p > 0 && *d.p%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(*d.p/(24*time.Hour)), 10) + "d"
	}
	return d.p.String()
}

func (d daysValue) Set(s string) error {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return fmt.Errorf("want a number of days like 90d, or a duration like 2160h")
		}
		*d.p = time.Duration(days) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("want a number of days like 90d, or a duration like 2160h")
	}
	*d.p = v
	return nil
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

// usageHead is the top of bridge -help: what the command does and its subcommands.
const usageHead = `bridge makes Segment and Jimo agree on who a user is.

usage:
  bridge [flags]               serve until interrupted
  bridge outbox list [flags]   list outbox jobs (dead ones by default)
  bridge outbox retry [flags] (-all | JOB_ID...)
                               make dead jobs due again (bridge outbox -help)
  bridge bench [flags]         measure ingest against baselines (bridge bench -help)
  bridge soak [flags]          run under steady load and report what stays bounded (bridge soak -help)
  bridge help                  this text

Every flag can be given instead as the BRIDGE_* variable shown under it; a
flag on the command line wins over its variable.

flags:
`

// printUsage writes bridge -help: usageHead, then every flag with its
// BRIDGE_* variable, meaning and default.
func printUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprint(w, usageHead)
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		if _, ok := f.Value.(listValue); ok {
			kind = "list"
		}
		head := "  -" + f.Name
		if kind != "" {
			head += " " + kind
		}
		fmt.Fprintf(w, "%s\n      %s: %s", head, envName(f.Name), usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
