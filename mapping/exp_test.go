package mapping

import (
	"slices"
	"strings"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

type countObs struct{ commits, msgs atomic.Int64; took atomic.Int64 }

func (o *countObs) Committed(n int, took time.Duration, err error) {
	o.commits.Add(1)
	o.msgs.Add(int64(n))
	o.took.Add(int64(took))
}

func expMsg(n int) Message {
	id := uuid.NewString()
	m := identify(id, "u_"+uuid.NewString(), uuid.NewString(), time.Duration(n)*time.Millisecond)
	m.Raw = []byte(fmt.Sprintf(`{"type":"identify","messageId":%q,"userId":"u_%s","anonymousId":%q,"traits":{"email":"x@example.com","plan":"pro","name":"Bench User"},"timestamp":"2026-11-24T04:42:55.123456Z","context":{"library":{"name":"analytics-go","version":"3.3.0"}}}`, id, m.UserID, m.AnonymousID))
	m.Traits = map[string]any{"plan": "pro", "name": "Bench", "email": id[:8] + "@example.com"}
	m.Email = id[:8] + "@example.com"
	m.Jobs = []Job{{Destination: "jimo", OrderingKey: m.UserID, MessageID: m.ID, Payload: []byte(`{"identify":"` + m.UserID + `","traits":{"plan":"pro"}}`)}}
	return m
}

func TestExpConcurrent(t *testing.T) {
	c, _ := strconv.Atoi(os.Getenv("EXP_CONC"))
	total, _ := strconv.Atoi(os.Getenv("EXP_TOTAL"))
	if c == 0 {
		t.Skip()
	}
	obs := &countObs{}
	s := openTestStore(t, Options{Observer: obs})
	pre, _ := strconv.Atoi(os.Getenv("EXP_PREFILL"))
	for n := 0; n < pre; n += 1000 {
		msgs := make([]Message, 1000)
		for i := range msgs {
			msgs[i] = expMsg(n + i)
		}
		if _, err := s.Submit(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
	}
	s.Checkpoint(context.Background())
	obs.commits.Store(0); obs.msgs.Store(0); obs.took.Store(0)
	var lmu sync.Mutex
	var lat []time.Duration
	if os.Getenv("EXP_DROP") != "" {
		for _, ix := range strings.Split(os.Getenv("EXP_DROP"), ",") {
			if _, err := s.write.Exec("DROP INDEX " + ix); err != nil {
				t.Fatal(err)
			}
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1))
				if n > total {
					return
				}
				t0 := time.Now()
				_, err := s.Submit(context.Background(), []Message{expMsg(n + 10000000)})
				lmu.Lock(); lat = append(lat, time.Since(t0)); lmu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	t.Logf("p50 %s p99 %s max %s", lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	t.Logf("conc %d total %d: %.0f events/s, %.1f µs/event; commits %d, avg group %.1f, avg commit %.2f ms",
		c, total, float64(total)/el.Seconds(), float64(el.Microseconds())/float64(total), obs.commits.Load(),
		float64(obs.msgs.Load())/float64(obs.commits.Load()), float64(obs.took.Load())/float64(obs.commits.Load())/1e6)
}

func TestExpStore(t *testing.T) {
	g, _ := strconv.Atoi(os.Getenv("EXP_GROUP"))
	total, _ := strconv.Atoi(os.Getenv("EXP_TOTAL"))
	if g == 0 {
		t.Skip()
	}
	s := openTestStore(t, Options{})
	start := time.Now()
	for n := 0; n < total; n += g {
		msgs := make([]Message, g)
		for i := range msgs {
			msgs[i] = expMsg(n + i)
		}
		if _, err := s.Submit(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
	}
	fi, _ := os.Stat(s.path + "-wal")
	db, _ := os.Stat(s.path)
	t.Logf("group %d total %d: %.1f µs/event; wal %d MB, db %d MB", g, total, float64(time.Since(start).Microseconds())/float64(total), fi.Size()>>20, db.Size()>>20)
}
