package mapping

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkSubmitIdentify measures group-committed identifies (fresh user and
// anonymous IDs, traits) in groups of 100, through the real SQLite store.
func BenchmarkSubmitIdentify(b *testing.B) {
	s := openTestStore(b, Options{})
	n := 0
	b.ResetTimer()
	for b.Loop() {
		msgs := make([]Message, 100)
		for i := range msgs {
			n++
			msgs[i] = identify(fmt.Sprint("m", n), fmt.Sprint("user-", n), fmt.Sprint("anon-", n), time.Duration(n)*time.Millisecond)
			msgs[i].Traits = map[string]any{"plan": "pro", "name": "Bench"}
			msgs[i].Email = fmt.Sprint("u", n, "@example.com")
		}
		if _, err := s.Submit(context.Background(), msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}
