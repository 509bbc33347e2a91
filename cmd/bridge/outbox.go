package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/bridgeworks/bridge/mapping/store"
)

const outboxUsage = `usage:
  bridge outbox list  [-db PATH] [-state dead|pending|running|done|all] [-limit N]
  bridge outbox retry [-db PATH] (-all | JOB_ID...)
Flags may come before or after the job IDs; -db defaults to BRIDGE_DB, else to bridge.db`

// runOutbox is the operator's view of the outbox: list jobs (dead ones by
// default) and retry dead ones. It opens the same database as the server and
// can run while the server does. -help (also as the command) prints the
// usage and returns flag.ErrHelp.
func runOutbox(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%s", outboxUsage)
	}
	fs := flag.NewFlagSet("bridge outbox "+args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	db := fs.String("db", "bridge.db", "SQLite database path, or a postgres:// URL (BRIDGE_DB)")
	if v := getenv("BRIDGE_DB"); v != "" {
		*db = v
	}
	state := fs.String("state", store.JobDead, "list: jobs in this state, or all")
	limit := fs.Int("limit", 100, "list: at most this many jobs")
	all := fs.Bool("all", false, "retry: every dead job")
	fs.Usage = func() {
		fmt.Fprintln(stdout, outboxUsage)
		fmt.Fprintln(stdout, "flags:")
		fs.PrintDefaults()
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fs.Usage()
		return flag.ErrHelp
	}
	positional, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	open := func() (*store.Store, error) {
		if _, err := os.Stat(*db); err != nil && !store.IsPostgres(*db) {
			return nil, fmt.Errorf("no bridge database at %s (pass -db or BRIDGE_DB): %w", *db, err)
		}
		return store.Open(ctx, *db, store.Options{})
	}

	switch args[0] {
	case "list":
		store, err := open()
		if err != nil {
			return err
		}
		defer store.Close()
		if len(positional) > 0 {
			return fmt.Errorf("bridge outbox list takes no arguments, got %q\n%s", positional, outboxUsage)
		}
		if *state == "all" {
			*state = ""
		}
		jobs, err := store.Jobs(ctx, *state, *limit)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tDESTINATION\tSTATE\tATTEMPTS\tUPDATED\tMESSAGE ID\tLAST ERROR")
		for _, j := range jobs {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", j.ID, j.Destination, j.State, j.Attempts, j.UpdatedAt.Format(time.RFC3339), j.MessageID, j.LastError)
		}
		return tw.Flush()
	case "retry":
		var ids []int64
		for _, a := range positional {
			id, err := strconv.ParseInt(a, 10, 64)
			if err != nil {
				return fmt.Errorf("job ID %q is not a number\n%s", a, outboxUsage)
			}
			ids = append(ids, id)
		}
		if len(ids) == 0 && !*all {
			return errors.New("name the jobs to retry, or pass -all\n" + outboxUsage)
		}
		store, err := open()
		if err != nil {
			return err
		}
		defer store.Close()
		n, err := store.RetryJobs(ctx, ids)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d job(s) due again; a running bridge delivers them shortly\n", n)
		return nil
	}
	return fmt.Errorf("unknown outbox command %q\n%s", args[0], outboxUsage)
}

// parseInterleaved parses fs's flags wherever they stand among the
// positional arguments (flag.FlagSet.Parse stops at the first of those), so
// "retry 42 43 -db x.db" works, and returns the positional arguments in
// order. Everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional, rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if args = fs.Args(); len(args) == 0 {
			return append(positional, rest...), nil
		}
		positional, args = append(positional, args[0]), args[1:]
	}
}
